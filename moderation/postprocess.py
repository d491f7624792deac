"""The worker's post-processing step: moderate, label, watermark, add provenance, save.

Runs in a worker thread (``Worker(postprocess=...)``), once per finished job, so everything here
is blocking. Order matters: the NSFW check sees the raw image; the badge is drawn before the
watermark so the mark covers it; the metadata is written last so the file's hash is final.

Payloads are derived from the job (``watermark.payload_for(job.seq, index)``), so no image row
has to exist before embedding.

The grid is tiled (``core.grid.make_grid``) from the images exactly as delivered:
labelled, then marked. It gets no mark of its own (an embed and a verify fewer per job, ~0.35 s
of CPU): each tile carries its image's payload, which ``watermark.detect_tiles`` reads back, and
a tile cropped out of the grid is that image. Nor does it get a badge of its own: every tile
already shows one, and a grid badge would paint over the bottom-right tile's mark after it was
made. Its metadata (PNG text, XMP, C2PA) names the job as for any image, with
``watermark_payload`` None (the grid itself carries no single mark) and the tiles' verified
payloads under ``tile_watermark_payloads`` (None for a tile whose mark did not read back).
``result.grid`` (the unmarked images tiled, made only when read) is never read here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.grid import make_grid
from core.jobs import Job, JobBlocked, Processed, ProcessedImage
from moderation import watermark
from moderation.deepfake import check_output
from moderation.label import add_label
from moderation.provenance import C2paSigner, ImageProvenance, encode_png, without_prompt
from moderation.watermark_key import WatermarkKey, key_for_settings

log = logging.getLogger(__name__)

POLICY_TIMEOUT_S = 10.0

# (image, policy, *, nsfw_channel) -> Decision; a stand-in for tests about the step's handling.
ImageCheck = Callable[..., Any]


@dataclass
class _Item:
    index: int  # the image's index in its job (its watermark slot)
    image: Image.Image
    seed: int
    infotext: str


class PostProcessor:
    """Callable ``(job, result) -> Processed``; build once per process with the settings."""

    def __init__(
        self,
        settings: Any,
        *,
        store: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        check_image: ImageCheck | None = None,
        signer: C2paSigner | None | bool = True,
        watermark_key: WatermarkKey | None = None,
    ) -> None:
        """``store`` + ``loop``: read the channel policy and write the audit log through the
        bot's event loop. ``check_image`` replaces NudeNet + the deepfake output rule;
        ``signer=True`` creates the C2PA signer from the settings (None/False: no C2PA);
        ``watermark_key`` defaults to the instance key (made on first start, next to C2PA's)."""
        self.settings = settings
        self.store = store
        self.loop = loop
        self._check_image = check_image
        if signer is True:
            signer = C2paSigner.for_settings(settings)
        self.signer: C2paSigner | None = signer or None
        self.watermark_key = watermark_key or key_for_settings(settings)

    # --- the step ---------------------------------------------------------------------------

    def __call__(self, job: Job, result: Any) -> Processed:
        policy = self._policy(job)
        nsfw_channel = bool(job.delivery.get("nsfw_channel", False))
        items = [
            _Item(i, img, seed, result.infotext(i))
            for i, (img, seed) in enumerate(zip(result.images, result.seeds, strict=True))
        ]
        prompt = str(job.params.get("prompt") or "")
        scans = self._scan([item.image for item in items])
        decisions = [self._moderate(prompt, scan, policy, nsfw_channel) for scan in scans]
        pairs = list(zip(items, decisions, strict=True))
        blocked = [(item, d) for item, d in pairs if d is not None and d.blocked]
        for item, decision in blocked:
            self._audit(job, decision, _sha(item.image))
        if blocked:
            # Whole job: the grid shows every image, and partial grids confuse the U1..U4 buttons.
            raise JobBlocked(f"the generated image was blocked. {blocked[0][1].reason}")
        spoiler = bool(job.delivery.get("spoiler")) or any(
            d is not None and d.action == "spoiler" for d in decisions
        )
        for decision in decisions:
            if decision is not None and decision.action == "spoiler":
                self._audit(job, decision, None)
                break

        folder = Path(self.settings.images_dir) / job.id
        folder.mkdir(parents=True, exist_ok=True)
        out: list[ProcessedImage] = []
        delivered: list[Image.Image] = []
        tile_payloads: list[str | None] = []
        for item, decision in pairs:
            marked = self._mark(job, item, policy)
            mark = _mark_record(marked)
            payload = marked.payload.hex() if marked.verified else None
            path, digest = self._save(
                job, item.index, item.infotext, policy, marked.image, folder / f"{item.index}.png",
                watermark_payload=payload,
            )
            moderation = {
                "nsfw": decision.to_dict() if decision is not None else None,
                "spoiler": spoiler,
                "watermark": mark,
            }
            out.append(
                ProcessedImage(
                    item.index, item.seed, path, item.image.width, item.image.height,
                    digest, payload, moderation,
                )
            )
            delivered.append(marked.image)
            tile_payloads.append(payload)
        grid_path = None
        if len(items) > 1:
            grid_path, _ = self._save(
                job, watermark.GRID_SLOT, items[0].infotext, policy, make_grid(delivered),
                folder / "grid.png", extra={"tile_watermark_payloads": tile_payloads},
            )
        return Processed(out, grid_path)

    def _mark(self, job: Job, item: _Item, policy: Any) -> watermark.Marked:
        """The image as delivered: badge first (when the policy asks), then the mark over it."""
        image = add_label(item.image) if getattr(policy, "ai_label", False) else item.image
        payload = watermark.payload_for(job.seq, item.index)
        return watermark.embed_verified(image, payload, self.watermark_key)

    def _save(
        self,
        job: Job,
        index: int,
        infotext: str,
        policy: Any,
        image: Image.Image,
        path: Path,
        *,
        watermark_payload: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Path, str]:
        """Write the PNG with its provenance; (path, sha256 of the file)."""
        include_prompt = self.settings.provenance.include_prompt and getattr(
            policy, "include_prompt_in_metadata", True
        )
        meta = ImageProvenance(
            instance=self.settings.provenance.instance_name,
            job_id=job.id,
            index=index,
            parameters=infotext if include_prompt else without_prompt(infotext),
            watermark_payload=watermark_payload,
            extra=extra or {},
        )
        data = encode_png(image, meta, self.signer)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # never a half-written PNG under the final name
        return path, hashlib.sha256(data).hexdigest()

    # --- moderation ---------------------------------------------------------------------------

    def _scan(self, images: list[Image.Image]) -> list[Any]:
        """The job's images for ``_moderate``: NudeNet scans (one model call on the GPU), or the
        images themselves for a ``check_image`` stand-in."""
        if self._check_image is not None:
            return images
        from moderation.nsfw import scan_images

        return scan_images(images)

    def _moderate(self, prompt: str, scan: Any, policy: Any, nsfw_channel: bool) -> Any:
        """One NudeNet scan feeds both the nudity rule and the deepfake output rule (a named
        real person, a realistic face, no clear style). Nothing here fails open: a detector
        that cannot run raises, and the worker ends the job as failed, never delivers it."""
        if self._check_image is not None:
            return self._check_image(scan, policy, nsfw_channel=nsfw_channel)
        return check_output(prompt, scan, policy, nsfw_channel=nsfw_channel)

    def _policy(self, job: Job) -> Any:
        from moderation.policy import Policy, load_policy

        base = Policy.default(self.settings)
        if self.store is None or self.loop is None or job.guild_id is None:
            return base
        future = asyncio.run_coroutine_threadsafe(
            load_policy(self.store, job.guild_id, job.channel_id, base=base), self.loop
        )
        try:
            return future.result(POLICY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the safe defaults still apply
            log.warning("job %s: policy unavailable (%s); using defaults", job.id, exc)
            return base

    def _audit(self, job: Job, decision: Any, sha: str | None) -> None:
        if self.store is None or self.loop is None:
            return
        from moderation import audit

        future = asyncio.run_coroutine_threadsafe(
            audit.record(
                self.store, guild_id=job.guild_id, channel_id=job.channel_id,
                user_id=job.user_id, job_id=job.id, stage="output_image",
                decision=decision, image_sha256=sha,
            ),
            self.loop,
        )
        try:
            future.result(POLICY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the block itself must still happen
            log.warning("job %s: audit entry not written (%s)", job.id, exc)


def _mark_record(marked: watermark.Marked) -> dict[str, Any]:
    """What ``images.moderation["watermark"]`` keeps about one embed."""
    image = marked.image
    mark: dict[str, Any] = {
        "payload": marked.payload.hex(),
        "verified": marked.verified,
        "psnr": round(marked.psnr, 2) if marked.psnr != float("inf") else None,
    }
    if not marked.verified:
        mark["note"] = (
            f"mark did not read back ({image.width}x{image.height}; reliable from "
            f"{watermark.RELIABLE_SIDE} px a side); recorded as unmarked"
        )
    return mark


def _sha(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def make_postprocess(settings: Any, store: Any = None) -> PostProcessor:
    """Factory used by ``bot/runner.py``; call it from the bot's event loop."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    return PostProcessor(settings, store=store, loop=loop)
