"""The generation engine: validated requests in, images out, on one device.

The worker calls it from a thread; it knows nothing about Discord or moderation. Several
compatible requests (same ``batch_key``) run in one denoising call with one ``torch.Generator``
per image, so each request gets the same pixels it would have got alone while the GPU does
one batched pass instead of several.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from PIL import Image

from core.config import Settings
from core.errors import JobCancelled, OutOfMemory
from core.grid import make_grid
from generation.batching import BatchRows, batch_results, chunks, step_callback
from generation.blend import adapter_for, adapter_on
from generation.chaos import ChaosPlan
from generation.img2img import variation_of
from generation.inpaint import inpaint_view, load_inpaint_model
from generation.loading import LoadedModel, is_sdxl, load_model, make_scheduler
from generation.prompt_embeds import prompt_kwargs
from generation.request import MAX_SEED, GenerationRequest, resolve
from generation.results import (
    GenerationResult,
    ProgressEvent,
    Throttled,
    latent_space,
    latents_preview,
)
from generation.tiling import seamless
from generation.upscale import TILE_OVERLAP, tile_layout, upscale_image

# Where callers import them from since these lived here (the worker, the tests, bench/).
__all__ = [
    "TILE_OVERLAP",
    "Engine",
    "GenerationResult",
    "ProgressEvent",
    "latent_space",
    "latents_preview",
    "make_grid",
    "tile_layout",
]

log = logging.getLogger(__name__)

# Decode whole up to a little past 1024x1024 (an SDXL upscale tile is its native size plus the
# overlap); only bigger images decode tile by tile.
VAE_TILING_PIXELS = 1152 * 1152


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
        self._inpaint: Any = None  # made by the first canvas batch (``_inpaint_pipe``)
        self._inpaint_scheduler_config: Any = None

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
        if req.references:  # one set of /blend images per pipeline call
            return (self.name, "blend", id(req))
        mode = "canvas" if req.canvas is not None else "img2img" if img2img else "txt2img"
        return (
            self.name,
            req.width,
            req.height,
            req.steps,
            req.guidance,
            req.scheduler,
            mode,
            req.strength if img2img else None,
            req.tile,
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
        return self.validate(
            variation_of(
                parent, image, strong=strong, seed=seed, defaults=self.defaults, limits=self.limits
            )
        )

    def reroll_request(self, parent: GenerationRequest) -> GenerationRequest:
        """The same request with a new seed (a zoom, pan or region stays one: same source)."""
        kind = parent.kind if parent.canvas is not None else "reroll"
        return self.validate(parent.replace(seed=secrets.randbelow(MAX_SEED + 1), kind=kind))

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
        plan = ChaosPlan.of([self.validate(r) for r in reqs])  # --chaos: one request per image
        resolved, progress = plan.requests, plan.progress(progress)
        if progress is not None and progress_interval_s > 0:
            progress = Throttled(progress, progress_interval_s)
        results: list[GenerationResult | None] = [None] * len(resolved)
        groups: dict[Hashable, list[int]] = {}
        for i, req in enumerate(resolved):
            groups.setdefault(self.batch_key(req), []).append(i)
        for indices in groups.values():
            for chunk in chunks(indices, resolved, self.limits.max_batch):
                for i, result in zip(
                    chunk, self._run_batch(chunk, resolved, progress, should_cancel), strict=True
                ):
                    results[i] = result
        return plan.merge([r for r in results if r is not None])

    def _run_batch(
        self,
        indices: list[int],
        reqs: list[GenerationRequest],
        progress: Callable[[ProgressEvent], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> list[GenerationResult]:
        batch = [reqs[i] for i in indices]
        first = batch[0]
        rows = BatchRows.of(batch, self.limits)
        on_step = step_callback(
            indices, first, rows.owners, progress, should_cancel, space=self.latent_space
        )
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled before start")
        pipe = self._pipe_for(first, img2img=bool(rows.init_images), inpaint=bool(rows.masks))
        guided = first.guidance > 1.0
        kwargs: dict[str, Any] = {
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": rows.generators,
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if rows.masks:
            kwargs.update(
                image=rows.init_images, mask_image=rows.masks, strength=first.strength,
                width=first.width, height=first.height,
            )
        elif rows.init_images:
            kwargs.update(image=rows.init_images, strength=first.strength)
        else:
            kwargs.update(width=first.width, height=first.height)
        adapter = contextlib.nullcontext()
        if first.references:  # /blend: the images steer every row through the IP-Adapter
            adapter = adapter_on(pipe, adapter_for(pipe, self.limits))
            kwargs["ip_adapter_image"] = [list(first.references)]
        started = time.perf_counter()
        vae_dtype = pipe.vae.dtype
        out_of_memory = False
        try:
            with torch.inference_mode(), adapter:
                kwargs.update(  # no local of its own: ``del kwargs`` frees the embeddings
                    prompt_kwargs(
                        pipe, rows.prompts, rows.negatives,
                        guided=guided, xl=is_sdxl(pipe), device=self.device,
                    )
                )
                with seamless(pipe, first.tile):
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
        elapsed = time.perf_counter() - started
        images = rows.finish(output.images)
        return batch_results(batch, rows.owners, images, elapsed, self.name)

    def _pipe_for(self, first: GenerationRequest, *, img2img: bool, inpaint: bool = False) -> Any:
        """The pipeline for a batch like ``first``, with its VAE tiling and scheduler set."""
        pipe = self._inpaint_pipe() if inpaint else self.img2img if img2img else self.txt2img
        # Large images (upscales) decode tile by tile; normal sizes decode whole (no seams).
        if first.width * first.height > VAE_TILING_PIXELS:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        config = self._inpaint_scheduler_config if inpaint else self._scheduler_config
        pipe.scheduler = make_scheduler(config, first.scheduler)
        if not inpaint:
            self.img2img.scheduler = pipe.scheduler
        return pipe

    def _inpaint_pipe(self) -> Any:
        """The inpainting pipeline, made on first use: most servers never zoom or pan."""
        if self._inpaint is None:
            if self.limits.inpaint:
                pipe = load_inpaint_model(self.limits, device=self.device, dtype=self.dtype)
                # Its own model's scheduler config, kept before any run replaces the scheduler.
                self._inpaint_scheduler_config = pipe.scheduler.config
            else:
                pipe = inpaint_view(self.txt2img)
                self._inpaint_scheduler_config = self._scheduler_config
            self._inpaint = pipe
        return self._inpaint

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
        return upscale_image(
            image,
            parent.replace(canvas=None),  # upscaling a zoom's image: the zoom is done
            run_batch=self._run_batch,
            defaults=self.defaults,
            limits=self.limits,
            model=self.name,
            seed=seed,
            tile_size=tile_size,
            progress=progress,
            should_cancel=should_cancel,
        )

    def free_memory(self) -> None:
        """Drop cached allocations after an OOM so the next job starts clean."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
