"""The generation engine: validated requests in, images out, on one device.

The worker calls it from a thread; it knows nothing about Discord or moderation. Several
compatible requests (same ``batch_key``) run in one denoising call with one ``torch.Generator``
per image, so each request gets the same pixels it would have got alone while the GPU does
one batched pass instead of several.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import math
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.config import Settings
from core.errors import JobCancelled, OutOfMemory, UserInputError
from core.grid import make_grid
from generation.loading import LoadedModel, is_sdxl, load_model, make_scheduler
from generation.request import MAX_SEED, GenerationRequest, infotext, resolve

log = logging.getLogger(__name__)

SUBTLE_STRENGTH = 0.35
STRONG_STRENGTH = 0.65
UPSCALE_STRENGTH = 0.3
UPSCALE_FACTOR = 2
TILE_OVERLAP = 32
# Decode whole up to a little past 1024x1024 (an SDXL upscale tile is its native size plus the
# overlap); only bigger images decode tile by tile.
VAE_TILING_PIXELS = 1152 * 1152

# Fixed latent -> RGB projections (least-squares fits, as ComfyUI and A1111 use them), one per
# latent space: previews without running the VAE. SDXL's VAE has its own latent space, so SD 1.x
# factors give it the wrong colours.
_LATENT_RGB = {
    "sd": (
        torch.tensor(
            [
                [0.298, 0.207, 0.208],
                [0.187, 0.286, 0.173],
                [-0.158, 0.189, 0.264],
                [-0.184, -0.271, -0.473],
            ]
        ),
        torch.zeros(3),
    ),
    "sdxl": (
        torch.tensor(
            [
                [0.3651, 0.4232, 0.4341],
                [-0.2533, -0.0042, 0.1068],
                [0.1076, 0.1111, -0.0362],
                [-0.3165, -0.2492, -0.2188],
            ]
        ),
        torch.tensor([0.1084, -0.0175, -0.0011]),
    ),
}


def latent_space(family: str) -> str:
    """Which latent -> RGB projection a model family's previews use."""
    return "sdxl" if family.startswith("sdxl") else "sd"


@dataclass(frozen=True)
class ProgressEvent:
    step: int  # steps done, 1..total
    total: int
    latents: torch.Tensor | None = field(default=None, repr=False)  # CPU copy, for ``preview``
    request_index: int = 0  # which of the co-batched requests this event is about
    size: tuple[int, int] | None = None  # final image size the preview is scaled to
    space: str = "sd"  # latent space, for the preview's colours (``latent_space``)

    @functools.cached_property
    def preview(self) -> Image.Image | None:
        """A cheap RGB preview, made only when asked for: a bot that edits its message every
        1.5 s reads a few of them, and making one per step slowed small jobs by ~7 %."""
        if self.latents is None:
            return None
        return latents_preview(self.latents, self.size, space=self.space)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    request: GenerationRequest
    width: int
    height: int
    model: str
    timings: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def grid(self) -> Image.Image:
        """The images tiled, made when first read: off the GPU thread, and not at all by the
        bot's post-processing (it tiles the watermarked images instead)."""
        return make_grid(self.images)

    def infotext(self, index: int = 0) -> str:
        """A1111 "parameters" text for image ``index`` (its own seed)."""
        return infotext(self.request, self.seeds[index], self.model)

    def metadata(self) -> dict[str, Any]:
        """JSON-safe description of what was made and how long it took."""
        req = self.request
        return {
            "kind": req.kind,
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "seeds": list(self.seeds),
            "width": self.width,
            "height": self.height,
            "steps": req.steps,
            "guidance": req.guidance,
            "scheduler": req.scheduler,
            "strength": req.strength if req.init_image is not None else None,
            "count": len(self.images),
            "model": self.model,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class _Throttled:
    """A progress callback that only wants the first step, the last, and one per interval."""

    def __init__(self, progress: Callable[[ProgressEvent], None], interval_s: float) -> None:
        self.progress = progress
        self.interval_s = interval_s
        self.last = float("-inf")

    def due(self, step: int, total: int) -> bool:
        now = time.monotonic()
        if step <= 1 or step >= total or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False

    def __call__(self, event: ProgressEvent) -> None:
        self.progress(event)


def _due(progress: Callable[[ProgressEvent], None], step: int, total: int) -> bool:
    """Asked once per step, before building the step's events (their latents copy is the cost)."""
    return progress.due(step, total) if isinstance(progress, _Throttled) else True


def latents_preview(
    latents: torch.Tensor, size: tuple[int, int] | None = None, *, space: str = "sd"
) -> Image.Image:
    """A cheap RGB preview of one latent (C, H, W) via a fixed linear map, no VAE.

    ``size`` (width, height) scales it to the final image size so it can replace the image in place.
    """
    lat = latents.detach().float().cpu()
    factors, bias = _LATENT_RGB[space]
    if lat.shape[0] == factors.shape[0]:
        rgb = torch.einsum("chw,cr->hwr", lat, factors) + bias
    else:  # other latent spaces: show the first channels as they are
        rgb = lat.repeat(3, 1, 1)[:3].permute(1, 2, 0)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    return img.resize(size, Image.Resampling.BILINEAR) if size else img


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t
    )
    return isinstance(exc, oom_types) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@dataclass
class _BatchRows:
    """A co-batch flattened to one row per image: what the pipeline call takes."""

    prompts: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    generators: list[torch.Generator] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)  # row -> position of its request in the batch
    init_images: list[Image.Image] = field(default_factory=list)

    @classmethod
    def of(cls, batch: list[GenerationRequest]) -> _BatchRows:
        rows = cls()
        for pos, req in enumerate(batch):
            for seed in req.seeds:
                rows.prompts.append(req.prompt)
                rows.negatives.append(req.negative_prompt)
                # CPU generators: CUDA's random numbers differ between GPU models and torch
                # versions, the CPU's do not, so a seed remakes the same image on any machine
                # (diffusers' advice). Drawing the starting noise on the CPU costs microseconds.
                rows.generators.append(torch.Generator(device="cpu").manual_seed(seed))
                rows.owners.append(pos)
                if req.init_image is not None:
                    rows.init_images.append(_fit(req.init_image, req.width, req.height))
        return rows


class Engine:
    """One loaded model and the operations on it; not thread-safe (one worker thread uses it)."""

    def __init__(self, model: LoadedModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.limits = settings.model
        self.defaults = model.defaults
        self.device = model.device
        self.dtype = model.dtype
        self.name = model.name
        self.txt2img = model.txt2img
        self.img2img = model.img2img
        self._scheduler_config = model.txt2img.scheduler.config
        self.xl = is_sdxl(model.txt2img)
        self.latent_space = latent_space(model.defaults.family)
        # validate() runs on the event loop's threads while the GPU thread tokenizes inside the
        # pipeline; a Rust fast tokenizer must not be used from two threads at once
        # ("Already borrowed"), so counting tokens uses a private copy.
        self._token_counter = copy.deepcopy(model.txt2img.tokenizer)

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the configured model (blocking, possibly minutes on first download)."""
        engine = cls(load_model(settings.model), settings)
        if engine.model.compiled:
            engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """Run the default shapes once (1 image, then a full batch) and return the seconds.

        With ``model.compile`` the first run of a shape compiles; doing it here, before the worker
        starts, keeps that off the first users' jobs and out of the GPU thread's heartbeat. The
        second batch size also makes the compiled graphs dynamic in the batch dimension.
        """
        started = time.perf_counter()
        base = GenerationRequest("warm-up", seed=0, steps=2, count=1)
        self.generate([base])
        self.generate([base.replace(count=min(self.limits.max_batch, self.limits.max_count))])
        seconds = time.perf_counter() - started
        self.model.warm_up_s = seconds
        log.info("warm-up of the default shapes took %.1f s", seconds)
        return seconds

    # -- requests ---------------------------------------------------------------------------

    def validate(self, req: GenerationRequest) -> GenerationRequest:
        """Fill defaults and check limits; raises ``UserInputError`` naming the allowed range."""
        resolved = resolve(req, self.defaults, self.limits)
        tokens = len(self._token_counter(resolved.prompt).input_ids)
        limit = self._token_counter.model_max_length
        if tokens > limit:
            log.warning(
                "prompt is %d tokens; the text encoder reads the first %d, the rest is ignored",
                tokens,
                limit,
            )
        return resolved

    def batch_key(self, req: GenerationRequest) -> Hashable:
        """Requests with equal keys can share one denoising call."""
        req = self.validate(req) if req.seed is None or req.width is None else req
        img2img = req.init_image is not None
        return (
            self.name,
            req.width,
            req.height,
            req.steps,
            req.guidance,
            req.scheduler,
            "img2img" if img2img else "txt2img",
            req.strength if img2img else None,
        )

    def estimate_cost(self, req: GenerationRequest) -> float:
        """Relative GPU cost: megapixels x denoising steps x images (the queue calibrates seconds)."""
        req = self.validate(req) if req.width is None or req.steps is None else req
        steps = req.steps
        if req.init_image is not None:
            steps = max(1, int(req.steps * req.strength))
        return req.width * req.height / 1e6 * steps * req.count

    def variation_request(
        self,
        parent: GenerationRequest,
        image: Image.Image,
        *,
        strong: bool,
        seed: int | None = None,
    ) -> GenerationRequest:
        """Image-to-image from one image of a result, with a new seed."""
        strength = STRONG_STRENGTH if strong else SUBTLE_STRENGTH
        steps = parent.steps or self.defaults.steps
        steps = max(steps, math.ceil(1 / strength))
        width, height = self._fit_budget(image.width, image.height)
        return self.validate(
            parent.replace(
                init_image=image.convert("RGB"),
                strength=strength,
                steps=steps,
                width=width,
                height=height,
                aspect_ratio=None,
                seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
                kind="variation",
            )
        )

    def _fit_budget(self, width: int, height: int) -> tuple[int, int]:
        """Shrink (keeping the ratio) to the pixel budget: an upscaled image can still be varied."""
        scale = min(
            1.0,
            math.sqrt(self.limits.max_pixels / (width * height)),
            self.limits.max_side / max(width, height),
        )
        return max(32, int(width * scale) // 8 * 8), max(32, int(height * scale) // 8 * 8)

    def reroll_request(self, parent: GenerationRequest) -> GenerationRequest:
        """The same request with a new seed."""
        return self.validate(parent.replace(seed=secrets.randbelow(MAX_SEED + 1), kind="reroll"))

    # -- running ----------------------------------------------------------------------------

    def generate(
        self,
        reqs: Sequence[GenerationRequest],
        *,
        progress: Callable[[ProgressEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        progress_interval_s: float = 0.0,
    ) -> list[GenerationResult]:
        """Run requests, co-batching those with equal ``batch_key``; results keep the input order.

        ``progress_interval_s``: report the first and last step and at most one step per interval
        in between. Each report copies latents off the device (a GPU sync) and, in the bot, wakes
        the event loop, while the bot edits its message only every ~1.5 s anyway.
        """
        if progress is not None and progress_interval_s > 0:
            progress = _Throttled(progress, progress_interval_s)
        resolved = [self.validate(r) for r in reqs]
        results: list[GenerationResult | None] = [None] * len(resolved)
        groups: dict[Hashable, list[int]] = {}
        for i, req in enumerate(resolved):
            groups.setdefault(self.batch_key(req), []).append(i)
        for indices in groups.values():
            for chunk in self._chunks(indices, resolved):
                for i, result in zip(
                    chunk, self._run_batch(chunk, resolved, progress, should_cancel), strict=True
                ):
                    results[i] = result
        return [r for r in results if r is not None]

    def _chunks(self, indices: list[int], reqs: list[GenerationRequest]) -> list[list[int]]:
        """Split a compatible group so one call holds at most ``max_batch`` images (a lone big request still runs)."""
        chunks: list[list[int]] = []
        current: list[int] = []
        images = 0
        for i in indices:
            if current and images + reqs[i].count > self.limits.max_batch:
                chunks.append(current)
                current, images = [], 0
            current.append(i)
            images += reqs[i].count
        if current:
            chunks.append(current)
        return chunks

    def _run_batch(
        self,
        indices: list[int],
        reqs: list[GenerationRequest],
        progress: Callable[[ProgressEvent], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> list[GenerationResult]:
        batch = [reqs[i] for i in indices]
        first = batch[0]
        rows = _BatchRows.of(batch)
        on_step = self._step_callback(indices, first, rows.owners, progress, should_cancel)
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled before start")
        pipe = self._pipe_for(first, img2img=bool(rows.init_images))
        guided = first.guidance > 1.0
        kwargs: dict[str, Any] = {
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": rows.generators,
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if rows.init_images:
            kwargs.update(image=rows.init_images, strength=first.strength)
        else:
            kwargs.update(width=first.width, height=first.height)
        started = time.perf_counter()
        vae_dtype = pipe.vae.dtype
        out_of_memory = False
        try:
            with torch.inference_mode():
                kwargs.update(self._prompt_kwargs(pipe, rows.prompts, rows.negatives, guided))
                output = pipe(**kwargs)
        except JobCancelled:
            raise
        except Exception as exc:
            if not _is_oom(exc):
                raise
            out_of_memory = True
        finally:
            # SDXL upcasts its VAE to fp32 for decoding and casts it back only when the decode
            # succeeds: after an OOM there, fp16 latents would meet fp32 weights ever after.
            if pipe.vae.dtype != vae_dtype:
                pipe.vae.to(dtype=vae_dtype)
        if out_of_memory:
            # Outside the except block: the OOM and its traceback (whose frames hold this batch's
            # activations) are gone before memory is freed, and nothing chains to them.
            del kwargs
            self.free_memory()
            images = sum(r.count for r in batch)
            raise OutOfMemory(
                f"the GPU ran out of memory making {images} image(s) of "
                f"{first.width}x{first.height}; try a smaller size or fewer images"
            )
        return self._results(batch, rows.owners, output.images, time.perf_counter() - started)

    def _step_callback(
        self,
        indices: list[int],
        first: GenerationRequest,
        owners: list[int],
        progress: Callable[[ProgressEvent], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Callable[..., dict[str, Any]]:
        """The pipeline's ``callback_on_step_end``: progress events, then the cancel poll."""
        first_of = {pos: owners.index(pos) for pos in range(len(indices))}

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            # Report first, then poll: a cancel pressed while the step ran stops before the next.
            total = int(getattr(pipe, "num_timesteps", 0) or first.steps)
            if progress is not None and _due(progress, step + 1, total):
                latents = kwargs.get("latents")
                for pos, index in enumerate(indices):
                    latent = (
                        latents[first_of[pos]].detach().to("cpu", copy=True)
                        if latents is not None
                        else None
                    )
                    progress(
                        ProgressEvent(
                            step=step + 1,
                            total=total,
                            latents=latent,
                            request_index=index,
                            size=(first.width, first.height),
                            space=self.latent_space,
                        )
                    )
            if should_cancel is not None and should_cancel():
                raise JobCancelled("cancelled")
            return kwargs

        return on_step

    def _pipe_for(self, first: GenerationRequest, *, img2img: bool) -> Any:
        """The pipeline for a batch like ``first``, with its VAE tiling and scheduler set."""
        pipe = self.img2img if img2img else self.txt2img
        # Large images (upscales) decode tile by tile; normal sizes decode whole (no seams).
        if first.width * first.height > VAE_TILING_PIXELS:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        pipe.scheduler = make_scheduler(self._scheduler_config, first.scheduler)
        self.img2img.scheduler = pipe.scheduler
        return pipe

    def _results(
        self,
        batch: list[GenerationRequest],
        owners: list[int],
        images: list[Image.Image],
        elapsed: float,
    ) -> list[GenerationResult]:
        """One result per request of the batch, each with its own images."""
        n_images = len(images)
        results = []
        for pos, req in enumerate(batch):
            mine = [img for img, owner in zip(images, owners, strict=True) if owner == pos]
            results.append(
                GenerationResult(
                    images=mine,
                    seeds=req.seeds,
                    request=req,
                    width=req.width,
                    height=req.height,
                    model=self.name,
                    timings={
                        "batch_s": elapsed,
                        "per_image_s": elapsed / n_images,
                        "batch_images": float(n_images),
                    },
                )
            )
        return results

    def _prompt_kwargs(
        self, pipe: Any, prompts: list[str], negatives: list[str], guided: bool
    ) -> dict[str, Any]:
        """The prompt arguments of one pipeline call.

        SDXL models are trained with an all-zero embedding for "no negative prompt"
        (``force_zeros_for_empty_prompt``), but diffusers zeroes only when no negative prompt is
        passed at all. A co-batch mixing empty and non-empty negatives is encoded here, with the
        empty rows zeroed, so every image is what its request would give alone.
        """
        if not guided:
            return {"prompt": prompts, "negative_prompt": None}
        empty = [not n for n in negatives]
        zeros = self.xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        if not zeros or not any(empty):
            return {"prompt": prompts, "negative_prompt": negatives}
        if all(empty):
            return {"prompt": prompts, "negative_prompt": None}  # diffusers zeroes them
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negatives,
        )
        rows = torch.tensor(empty, device=negative.device)
        return {
            "prompt_embeds": embeds,
            "negative_prompt_embeds": negative.masked_fill(rows[:, None, None], 0.0),
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled.masked_fill(rows[:, None], 0.0),
        }

    def upscale(
        self,
        image: Image.Image,
        parent: GenerationRequest,
        *,
        seed: int | None = None,
        tile_size: int | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """2x upscale: Lanczos, then low-strength img2img (tiled when large) to add detail.

        Falls back to the plain Lanczos result when the device runs out of memory, so the
        button still gives the user a bigger image. Progress counts steps over all tiles.
        ``tile_size``: the largest tile side before the overlap, by default the model's native
        size (what it was trained at, where its detail is best).
        """
        started = time.perf_counter()
        width, height = image.width * UPSCALE_FACTOR, image.height * UPSCALE_FACTOR
        width, height = width // 8 * 8, height // 8 * 8
        if max(width, height) > self.limits.max_side:
            raise UserInputError(
                f"image is {image.width}x{image.height}; a 2x upscale would be {width}x{height}, "
                f"past the {self.limits.max_side} px limit"
            )
        big = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        steps = parent.steps or self.defaults.steps
        steps = max(steps, math.ceil(1 / UPSCALE_STRENGTH))
        base = parent.replace(
            count=1, kind="upscale", strength=UPSCALE_STRENGTH, steps=steps, aspect_ratio=None
        )
        base = base.replace(seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1))
        tile = int(tile_size or max(self.defaults.size, 64))
        fallback = None
        try:
            out = self._tiled(big, base, tile, progress, should_cancel)
        except OutOfMemory:
            log.warning(
                "upscale of %dx%d ran out of memory; returning the Lanczos resize", width, height
            )
            out, fallback = big, "lanczos"
        final_req = base.replace(width=width, height=height, init_image=image.convert("RGB"))
        timings = {"total_s": time.perf_counter() - started}
        if fallback:
            timings["lanczos_fallback"] = 1.0
        return GenerationResult(
            images=[out],
            seeds=[base.seed],
            request=final_req,
            width=width,
            height=height,
            model=self.name,
            timings=timings,
        )

    def _validate_upscale(
        self, base: GenerationRequest, image: Image.Image, width: int, height: int
    ) -> GenerationRequest:
        # The upscale target may exceed the per-request pixel budget (tiles keep memory bounded),
        # so only the side limit applies here.
        return resolve(
            base.replace(init_image=image, width=width, height=height),
            self.defaults,
            self.limits.model_copy(
                update={"max_pixels": max(self.limits.max_pixels, width * height)}
            ),
        )

    def _tiled(
        self,
        big: Image.Image,
        base: GenerationRequest,
        tile: int,
        progress: Callable[[ProgressEvent], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Image.Image:
        """Refine equal, evenly spread tiles in batched img2img calls and blend them with
        linear ramps over the overlaps, so no seams show. Tile ``k`` uses seed ``seed + k``:
        one noise pattern repeated over every tile would show as a texture."""
        width, height = big.size
        xs, tile_w = tile_layout(width, tile)
        ys, tile_h = tile_layout(height, tile)
        corners = [(top, left) for top in ys for left in xs]
        reqs = [
            self._validate_upscale(
                base.replace(seed=(base.seed + k) % (MAX_SEED + 1)),
                big.crop((left, top, left + tile_w, top + tile_h)),
                tile_w,
                tile_h,
            )
            for k, (top, left) in enumerate(corners)
        ]
        chunks = self._chunks(list(range(len(reqs))), reqs)
        refined: list[Image.Image] = []
        for done, chunk in enumerate(chunks):

            def chunk_progress(
                event: ProgressEvent, done: int = done, lead: int = chunk[0]
            ) -> None:
                if progress is not None and event.request_index == lead:
                    total = event.total * len(chunks)
                    progress(ProgressEvent(done * event.total + event.step, total))

            alone = False
            try:
                results = self._run_batch(chunk, reqs, chunk_progress, should_cancel)
            except OutOfMemory:
                if len(chunk) == 1:
                    raise
                alone = True
            if alone:  # after the except block, so the failed batch's memory is free
                log.warning("a batch of %d upscale tiles ran out of memory; one by one", len(chunk))
                results = [
                    self._run_batch([i], reqs, chunk_progress, should_cancel)[0] for i in chunk
                ]
            refined.extend(r.images[0] for r in results)
        if len(corners) == 1:
            return refined[0]
        acc = np.zeros((height, width, 3), np.float64)
        weight = np.zeros((height, width, 1), np.float64)
        mask = _ramp(tile_w, tile_h)
        for (top, left), img in zip(corners, refined, strict=True):
            acc[top : top + tile_h, left : left + tile_w] += np.asarray(img, np.float64) * mask
            weight[top : top + tile_h, left : left + tile_w] += mask
        return Image.fromarray(
            np.clip(acc / np.maximum(weight, 1e-8), 0, 255).round().astype(np.uint8)
        )

    def free_memory(self) -> None:
        """Drop cached allocations after an OOM so the next job starts clean."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    image = image.convert("RGB")
    return (
        image
        if image.size == (width, height)
        else image.resize((width, height), Image.Resampling.LANCZOS)
    )


def tile_layout(length: int, tile: int) -> tuple[list[int], int]:
    """Starts and size of the fewest equal tiles that cover ``length`` along one side.

    Each tile is at most ``tile`` plus the overlap (a multiple of 8 for the VAE), neighbours
    overlap by at least ``TILE_OVERLAP`` px, and the tiles are spread evenly: a 1024 px side
    at a 512 px model takes two 528 px tiles (work ~1.06x the image), not three of 768 px.
    """
    if length <= tile + TILE_OVERLAP:
        return [0], length
    count = math.ceil((length - TILE_OVERLAP) / tile)
    size = math.ceil((length + (count - 1) * TILE_OVERLAP) / count / 8) * 8
    size = min(size, length)
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def _ramp(width: int, height: int) -> np.ndarray:
    """Blend weights: 1 in the middle, falling linearly to near 0 over the overlap at each edge."""

    def axis(n: int) -> np.ndarray:
        ramp = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float64)
        return np.clip(ramp / TILE_OVERLAP, 1e-3, 1.0)

    return (axis(height)[:, None] * axis(width)[None, :])[..., None]
