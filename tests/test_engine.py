"""The engine on the real diffusers pipeline (``tiny`` random model, CPU)."""

from __future__ import annotations

import copy
import json
import logging
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import JobCancelled, OutOfMemory, UserInputError
from generation.engine import Engine, GenerationResult
from generation.request import SCHEDULERS, GenerationRequest


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(pixels(a), pixels(b))


def batch_equal(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding across batch sizes.

    On CPU, oneDNN convolutions and small-batch GEMMs (the UNet's time embedding) sum in a
    batch-size-dependent order, so latents differ by ~1e-6 between batch 1 and batch 4; after
    rounding to 8-bit, a handful of pixels land one level apart. Anything more is a real bug
    (wrong seed, prompt or negative prompt paired with an image) and changes most pixels a lot.
    """
    diff = np.abs(pixels(a) - pixels(b))
    return a.size == b.size and diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.fixture
def unet_calls(tiny_engine: Engine):
    """Counts real UNet forward passes (one per denoising step of a batch)."""
    calls: list[int] = []
    handle = tiny_engine.txt2img.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def test_txt2img_and_img2img_share_one_set_of_weights(tiny_engine: Engine):
    assert tiny_engine.txt2img.unet is tiny_engine.img2img.unet
    assert tiny_engine.txt2img.vae is tiny_engine.img2img.vae
    assert tiny_engine.txt2img.text_encoder is tiny_engine.img2img.text_encoder


def test_result_shape_seeds_and_grid(tiny_engine: Engine):
    [res] = tiny_engine.generate([GenerationRequest("a red fox", seed=7)])
    assert isinstance(res, GenerationResult)
    assert res.seeds == [7, 8, 9, 10]
    assert [img.size for img in res.images] == [(64, 64)] * 4
    assert res.grid.size == (128, 128)
    assert same(res.grid.crop((64, 64, 128, 128)), res.images[3])
    meta = res.metadata()
    assert (
        meta["seeds"] == [7, 8, 9, 10]
        and meta["model"] == "tiny"
        and meta["timings"]["batch_s"] > 0
    )
    assert "Seed: 9" in res.infotext(2)


def test_same_seed_same_pixels_other_seed_differs(tiny_engine: Engine):
    req = GenerationRequest("a red fox", seed=7, count=1)
    a = tiny_engine.generate([req])[0].images[0]
    b = tiny_engine.generate([req])[0].images[0]
    c = tiny_engine.generate([req.replace(seed=8)])[0].images[0]
    assert same(a, b)
    assert not same(a, c)


def test_each_image_of_a_batch_can_be_remade_alone_from_its_seed(tiny_engine: Engine):
    batch = tiny_engine.generate([GenerationRequest("a castle", seed=100, count=3)])[0]
    alone = tiny_engine.generate([GenerationRequest("a castle", seed=102, count=1)])[0]
    assert batch.seeds[2] == 102
    assert batch_equal(batch.images[2], alone.images[0])


def test_cobatched_requests_equal_their_solo_results(tiny_engine: Engine):
    reqs = [
        GenerationRequest("a red fox", negative_prompt="blurry", seed=1, count=2),
        GenerationRequest("a blue house at night", seed=50, count=1),
        GenerationRequest("a robot", negative_prompt="dark", seed=9, count=1),
    ]
    together = tiny_engine.generate(reqs)
    assert [r.timings["batch_images"] for r in together] == [4.0, 4.0, 4.0]  # one call
    for req, got in zip(reqs, together, strict=True):
        [solo] = tiny_engine.generate([req])
        assert solo.timings["batch_images"] == req.count
        assert got.seeds == solo.seeds
        assert all(batch_equal(a, b) for a, b in zip(got.images, solo.images, strict=True))


def test_cobatched_img2img_equals_solo(tiny_engine: Engine):
    init = Image.fromarray((np.indices((64, 64)).sum(0) % 256).astype(np.uint8)).convert("RGB")
    reqs = [
        GenerationRequest("a fox", init_image=init, strength=0.5, seed=3, count=1),
        GenerationRequest("a cat", init_image=init, strength=0.5, seed=4, count=2),
    ]
    together = tiny_engine.generate(reqs)
    assert together[0].timings["batch_images"] == 3.0
    for req, got in zip(reqs, together, strict=True):
        solo = tiny_engine.generate([req])[0]
        assert all(batch_equal(a, b) for a, b in zip(got.images, solo.images, strict=True))


def test_batch_key_separates_incompatible_requests(tiny_engine: Engine):
    base = tiny_engine.validate(GenerationRequest("a", seed=1))
    assert tiny_engine.batch_key(base) == tiny_engine.batch_key(base.replace(prompt="b", seed=5))
    assert tiny_engine.batch_key(base) != tiny_engine.batch_key(base.replace(steps=5))
    assert tiny_engine.batch_key(base) != tiny_engine.batch_key(base.replace(width=128))
    img2img = base.replace(init_image=Image.new("RGB", (64, 64)), strength=0.5)
    assert tiny_engine.batch_key(base) != tiny_engine.batch_key(img2img)


def test_incompatible_requests_run_separately_in_input_order(tiny_engine: Engine):
    reqs = [
        GenerationRequest("a", seed=1, count=1),
        GenerationRequest("b", seed=2, count=1, steps=2),
    ]
    results = tiny_engine.generate(reqs)
    assert [r.request.prompt for r in results] == ["a", "b"]
    assert [r.timings["batch_images"] for r in results] == [1.0, 1.0]


def test_progress_reports_every_step_with_a_preview(tiny_engine: Engine):
    events = []
    reqs = [GenerationRequest("a", seed=1, count=1), GenerationRequest("b", seed=2, count=1)]
    tiny_engine.generate(reqs, progress=events.append)
    assert [(e.step, e.total) for e in events if e.request_index == 0] == [
        (i, 4) for i in range(1, 5)
    ]
    assert [e.step for e in events if e.request_index == 1] == [1, 2, 3, 4]
    assert all(e.preview is not None and e.preview.size == (64, 64) for e in events)


def test_throttled_progress_keeps_the_first_and_last_step(tiny_engine: Engine):
    events = []
    reqs = [GenerationRequest("a", seed=1, count=1, steps=6), GenerationRequest("b", seed=2, count=1, steps=6)]
    # An interval no run reaches: only the ends are reported, for both co-batched requests.
    tiny_engine.generate(reqs, progress=events.append, progress_interval_s=3600)
    assert [(e.request_index, e.step) for e in events] == [(0, 1), (1, 1), (0, 6), (1, 6)]
    assert events[-1].preview is not None


def test_cancel_during_throttled_progress_still_stops_within_one_step(tiny_engine: Engine, unet_calls):
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) >= 4  # asked before step 1, then after every step, reported or not

    with pytest.raises(JobCancelled):
        tiny_engine.generate(
            [GenerationRequest("a", seed=1, count=1, steps=20)],
            progress=lambda event: None, should_cancel=cancel, progress_interval_s=3600,
        )
    assert len(unet_calls) == 3


def test_cancel_stops_within_one_step(tiny_engine: Engine, unet_calls):
    events = []

    def cancel() -> bool:
        return len(events) >= 2  # asked after step 2 finished

    with pytest.raises(JobCancelled):
        tiny_engine.generate(
            [GenerationRequest("a", seed=1, count=1, steps=20)],
            progress=events.append,
            should_cancel=cancel,
        )
    assert len(unet_calls) == 2  # 18 of the 20 steps never ran
    # and the engine still serves
    assert len(tiny_engine.generate([GenerationRequest("a", seed=1, count=1)])[0].images) == 1


def test_cancel_before_start_runs_nothing(tiny_engine: Engine, unet_calls):
    with pytest.raises(JobCancelled):
        tiny_engine.generate([GenerationRequest("a", count=1)], should_cancel=lambda: True)
    assert unet_calls == []


def test_out_of_memory_is_reported_and_engine_keeps_serving(tiny_engine: Engine):
    # A CUDA OOM cannot happen on this CPU machine: raise torch's own OOM error from inside the UNet.
    seen: list[weakref.ref] = []

    def oom(_module, args):
        seen.append(weakref.ref(args[0]))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = tiny_engine.txt2img.unet.register_forward_pre_hook(oom)
    try:
        with pytest.raises(OutOfMemory, match="ran out of memory making 4 image") as caught:
            tiny_engine.generate([GenerationRequest("a", seed=1)])
    finally:
        handle.remove()
    # The error kept by the caller holds nothing of the failed batch: no chained CUDA error whose
    # frames would keep the batch's latents (and activations) on the GPU.
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert seen and seen[0]() is None
    assert len(tiny_engine.generate([GenerationRequest("a", seed=1, count=1)])[0].images) == 1


def test_seeds_give_the_same_image_whatever_the_device(tiny_engine: Engine):
    """The starting noise comes from CPU generators: CUDA's differ by GPU model and torch
    version. The "CUDA" engine here is the same CPU pipeline labelled cuda (no GPU here): it
    must not ask for a CUDA generator, and gives the very same pixels."""
    on_gpu = copy.copy(tiny_engine)
    on_gpu.device = torch.device("cuda")
    req = GenerationRequest("a red fox", seed=11, count=1)
    assert same(on_gpu.generate([req])[0].images[0], tiny_engine.generate([req])[0].images[0])


def test_upscale_falls_back_to_lanczos_on_oom(tiny_engine: Engine):
    def oom(*_):
        raise torch.OutOfMemoryError("CUDA out of memory")

    img = tiny_engine.generate([GenerationRequest("a", seed=1, count=1)])[0].images[0]
    parent = tiny_engine.validate(GenerationRequest("a", seed=1, count=1))
    handle = tiny_engine.txt2img.unet.register_forward_pre_hook(oom)
    try:
        res = tiny_engine.upscale(img, parent, seed=3)
    finally:
        handle.remove()
    assert res.timings["lanczos_fallback"] == 1.0
    assert same(res.images[0], img.resize((128, 128), Image.Resampling.LANCZOS))


def test_long_prompt_is_truncated_with_a_warning(tiny_engine: Engine, caplog):
    prompt = " ".join(["a red fox in the forest"] * 60)  # ~300 tokens
    with caplog.at_level(logging.WARNING, logger="generation.engine"):
        res = tiny_engine.generate([GenerationRequest(prompt, seed=1, count=1)])[0]
    assert len(res.images) == 1
    assert "first 77" in caplog.text


def test_every_scheduler_runs(tiny_engine: Engine):
    for name in SCHEDULERS:
        res = tiny_engine.generate(
            [GenerationRequest("a", seed=1, count=1, steps=2, scheduler=name)]
        )[0]
        assert res.request.scheduler == name and res.images[0].size == (64, 64)


def test_ancestral_scheduler_is_reproducible_when_cobatched(tiny_engine: Engine):
    reqs = [
        GenerationRequest(p, seed=s, count=1, scheduler="euler_a") for p, s in (("a", 1), ("b", 2))
    ]
    together = tiny_engine.generate(reqs)
    solo = tiny_engine.generate([reqs[1]])[0]
    assert batch_equal(together[1].images[0], solo.images[0])
    assert not batch_equal(together[0].images[0], solo.images[0])


def test_variation_is_img2img_from_the_image_with_a_new_seed(tiny_engine: Engine, unet_calls):
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=2))
    src = tiny_engine.generate([parent])[0].images[0]
    subtle = tiny_engine.variation_request(parent, src, strong=False, seed=77)
    strong = tiny_engine.variation_request(parent, src, strong=True, seed=77)
    assert subtle.kind == "variation"
    assert np.array_equal(pixels(subtle.init_image), pixels(src))
    assert (subtle.seed, subtle.count, subtle.width, subtle.height) == (77, 2, 64, 64)
    assert subtle.strength < strong.strength
    unet_calls.clear()
    a = tiny_engine.generate([subtle])[0]
    subtle_steps = len(unet_calls)
    unet_calls.clear()
    b = tiny_engine.generate([strong])[0]
    # img2img denoises only the last steps x strength steps: more change costs more steps
    assert subtle_steps == int(subtle.steps * subtle.strength) >= 1
    assert len(unet_calls) == int(strong.steps * strong.strength) > subtle_steps
    assert not same(a.images[0], src) and not same(a.images[0], b.images[0])
    assert tiny_engine.variation_request(parent, src, strong=False).seed != parent.seed


def test_reroll_keeps_the_request_with_a_new_seed(tiny_engine: Engine):
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, negative_prompt="x", steps=3))
    child = tiny_engine.reroll_request(parent)
    assert child.seed != parent.seed
    assert child.replace(seed=1, kind="imagine") == parent


def test_upscale_doubles_the_size(tiny_engine: Engine):
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1))
    src = tiny_engine.generate([parent])[0].images[0]
    res = tiny_engine.upscale(src, parent, seed=5, tile_size=256)
    assert res.images[0].size == (128, 128) and res.width == 128
    assert res.request.kind == "upscale"
    assert not same(res.images[0], src.resize((128, 128), Image.Resampling.LANCZOS))


def test_tiled_upscale_has_the_right_size_and_is_reproducible(tiny_engine: Engine):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1, steps=4))
    events = []
    a = tiny_engine.upscale(src, parent, seed=5, tile_size=64, progress=events.append)
    b = tiny_engine.upscale(src, parent, seed=5, tile_size=64)  # 192x128 in 64px tiles
    assert a.images[0].size == (192, 128)
    assert same(a.images[0], b.images[0])
    # 6 equal tiles (3 across, 2 down) in batches of 4 and 2, each int(4 x 0.3) = 1 step,
    # counted as one job
    assert [(e.step, e.total) for e in events] == [(1, 2), (2, 2)]


def test_upscale_tiles_are_batched_and_each_has_its_own_seed(tiny_engine: Engine, unet_calls):
    src = Image.new("RGB", (96, 64), (90, 90, 90))  # every tile starts from the same grey
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1, steps=4))
    out = pixels(tiny_engine.upscale(src, parent, seed=5, tile_size=64).images[0])
    assert len(unet_calls) == 2  # six tiles in two batched calls, one step each
    # The corners belong to one tile each: with one seed for all, they would be identical.
    assert not np.array_equal(out[:40, :40], out[:40, -40:])


def test_upscale_tiles_that_do_not_fit_together_run_one_by_one(tiny_engine: Engine):
    def oom_when_batched(_module, args):
        if args[0].shape[0] > 2:  # more than one tile (x2 for classifier-free guidance)
            raise torch.OutOfMemoryError("CUDA out of memory")

    src = Image.new("RGB", (96, 64), (90, 30, 200))
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1, steps=4))
    batched = tiny_engine.upscale(src, parent, seed=5, tile_size=64)
    handle = tiny_engine.txt2img.unet.register_forward_pre_hook(oom_when_batched)
    try:
        alone = tiny_engine.upscale(src, parent, seed=5, tile_size=64)
    finally:
        handle.remove()
    assert "lanczos_fallback" not in alone.timings  # refined, not just resized
    assert batch_equal(alone.images[0], batched.images[0])


def test_cancelled_upscale_stops(tiny_engine: Engine, unet_calls):
    src = Image.new("RGB", (96, 64), (90, 30, 200))
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1, steps=4))
    with pytest.raises(JobCancelled):
        tiny_engine.upscale(src, parent, tile_size=64, should_cancel=lambda: len(unet_calls) >= 1)
    assert len(unet_calls) == 1  # the first batch of tiles, of two


def test_upscale_past_the_side_limit_is_refused(tiny_engine: Engine):
    parent = tiny_engine.validate(GenerationRequest("a", seed=1, count=1))
    with pytest.raises(UserInputError, match="2048 px limit"):
        tiny_engine.upscale(Image.new("RGB", (1100, 200)), parent)


def test_estimate_cost_scales_with_pixels_steps_and_images(tiny_engine: Engine):
    base = tiny_engine.validate(GenerationRequest("a", seed=1, count=1, steps=4))
    one = tiny_engine.estimate_cost(base)
    assert tiny_engine.estimate_cost(base.replace(count=4)) == pytest.approx(4 * one)
    assert tiny_engine.estimate_cost(base.replace(steps=8)) == pytest.approx(2 * one)
    assert tiny_engine.estimate_cost(base.replace(width=128, height=128)) == pytest.approx(4 * one)


def test_bad_request_is_rejected_before_running(tiny_engine: Engine, unet_calls):
    with pytest.raises(UserInputError, match="steps is 10000"):
        tiny_engine.generate([GenerationRequest("a", steps=10_000)])
    assert unet_calls == []


def test_guidance_zero_runs_without_classifier_free_guidance(tiny_engine: Engine):
    req = GenerationRequest("a", seed=1, count=2, steps=2, guidance=0.0)
    with_negative = tiny_engine.generate([req.replace(negative_prompt="ignored at guidance 0")])[0]
    plain = tiny_engine.generate([req])[0]
    assert all(same(a, b) for a, b in zip(with_negative.images, plain.images, strict=True))


def test_local_diffusers_folder_loads_the_same_model(tiny_engine: Engine, tmp_path):
    from core.config import Settings

    tiny_engine.txt2img.save_pretrained(tmp_path / "model")
    local = Engine.load(Settings(model={"name": str(tmp_path / "model"), "device": "cpu"}))
    assert local.defaults.family == "sd1"  # a plain SD pipeline, found from its configs
    assert local.txt2img.unet is local.img2img.unet
    req = GenerationRequest(
        "a fox", width=64, height=64, steps=2, guidance=5.0, scheduler="euler", seed=3, count=1
    )
    assert same(local.generate([req])[0].images[0], tiny_engine.generate([req])[0].images[0])


def test_family_defaults_from_the_model(tiny_engine: Engine):
    from generation.loading import detect_defaults

    turbo = detect_defaults(tiny_engine.txt2img, "stabilityai/sd-turbo")
    assert (turbo.family, turbo.steps, turbo.guidance) == ("sd-turbo", 2, 0.0)
    sd = detect_defaults(tiny_engine.txt2img, "some/finetune")
    assert (sd.family, sd.steps, sd.guidance) == ("sd1", 30, 7.0)


def test_missing_lora_file_is_a_clear_error(tmp_path):
    from core.config import Settings

    settings = Settings(
        model={"name": "tiny", "device": "cpu", "lora": tmp_path / "style.safetensors"}
    )
    with pytest.raises(UserInputError, match="LoRA file .*style.safetensors .*does not exist"):
        Engine.load(settings)


def test_variation_of_an_upscaled_image_fits_the_pixel_budget(tiny_engine: Engine):
    parent = tiny_engine.validate(GenerationRequest("a fox", seed=1, count=1))
    req = tiny_engine.variation_request(parent, Image.new("RGB", (2048, 1024)), strong=False)
    assert req.width * req.height <= tiny_engine.limits.max_pixels
    assert req.width % 8 == 0 and req.height % 8 == 0
    assert abs(req.width / req.height - 2) < 0.02


def test_tiny_weights_are_fixed_and_leave_the_global_rng_alone():
    from generation.tiny import build_tiny_pipeline

    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_pipeline()
    assert torch.equal(torch.rand(1), expected)
    b = build_tiny_pipeline()
    for module in ("unet", "vae", "text_encoder"):
        left, right = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert all(torch.equal(left[k], right[k]) for k in left), module


def test_unloadable_model_folder_is_a_clear_error(tmp_path):
    from core.config import Settings

    (tmp_path / "empty-model").mkdir()
    settings = Settings(model={"name": str(tmp_path / "empty-model"), "device": "cpu"})
    with pytest.raises(UserInputError, match="could not load model .*empty-model.*hub id"):
        Engine.load(settings)


def test_stored_params_remake_the_same_images(tiny_engine: Engine, tmp_path):
    """A job recovered from the store after a restart gives the pixels it would have given."""
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    req = tiny_engine.validate(
        GenerationRequest("a fox", init_image=init, strength=0.5, steps=2, count=1, seed=11)
    )
    params = json.loads(json.dumps(req.to_params(init_image_path=tmp_path / "init.png")))
    again = GenerationRequest.from_params(params)
    assert same(
        tiny_engine.generate([again])[0].images[0], tiny_engine.generate([req])[0].images[0]
    )


def _write_lora(path) -> None:
    """A small random LoRA for the tiny UNet, saved the way training scripts save one."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from generation.tiny import build_tiny_pipeline

    unet = build_tiny_pipeline().unet
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"])
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it do something
                param.normal_(0, 0.5, generator=gen)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(path.parent), unet_lora_layers=layers, weight_name=path.name
    )


def test_lora_by_path_is_fused_into_the_shared_unet(tiny_engine: Engine, tmp_path):
    from core.config import Settings

    lora = tmp_path / "style.safetensors"
    _write_lora(lora)
    req = GenerationRequest("a fox", seed=1, count=1, steps=2)
    engine = Engine.load(Settings(model={"name": "tiny", "device": "cpu", "lora": lora}))
    assert engine.txt2img.unet is engine.img2img.unet
    # Fused, then unloaded: no LoRA layers left to run (or to hold memory) at every step.
    assert not any("lora" in name for name, _ in engine.txt2img.unet.named_modules())
    styled = engine.generate([req])[0].images[0]
    assert np.abs(pixels(styled) - pixels(tiny_engine.generate([req])[0].images[0])).mean() > 1
