"""The GPU path as it runs on an NVIDIA card, pinned on CPU with tiny random pipelines.

Every test here is about a defect that first shows on a GPU with a real model (SD 1.5, SDXL)
but can be seen without one: what the loaders build, what the engine hands the UNet, how an
upscale is cut into tiles. Only what cannot run here (CUDA, NVML) is stood in for.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import ModelSettings, Settings
from core.errors import OutOfMemory
from generation.engine import TILE_OVERLAP, Engine, latents_preview, tile_layout
from generation.loading import load_model, prepare, set_vae_dtype
from generation.request import GenerationRequest
from generation.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL-shaped model saved as a diffusers folder, as one downloaded from the hub."""
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_sdxl_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sdxl_engine(sdxl_folder: Path) -> Engine:
    return Engine(
        load_model(ModelSettings(name=str(sdxl_folder), device="cpu")),
        Settings(model={"name": str(sdxl_folder), "device": "cpu"}),
    )


# --- upscale tiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "native", "tile"),
    [(512, 512, 528), (768, 768, 784), (1024, 1024, 1040)],  # SD 1.5, SD 2.x 768, SDXL
)
def test_upscale_tiles_are_the_even_split(source: int, native: int, tile: int):
    side = 2 * source
    starts, size = tile_layout(side, native)
    assert (len(starts), size) == (2, tile)  # 2x2 tiles of the native size plus the overlap
    assert starts[0] == 0 and starts[-1] + size == side
    assert all(b - a <= size - TILE_OVERLAP for a, b in zip(starts, starts[1:], strict=False))
    assert 4 * size * size / (side * side) < 1.1  # was 2.25x with 1.5x-native tiles


def test_small_upscales_are_one_tile():
    assert tile_layout(512, 512) == ([0], 512)
    assert tile_layout(544, 512) == ([0], 544)


# --- SDXL ----------------------------------------------------------------------------------------


def test_sdxl_has_no_stability_watermark_in_either_pipeline(sdxl_engine: Engine):
    # invisible-watermark is installed (for our own mark), so diffusers' default is "on".
    from diffusers.utils import is_invisible_watermark_available

    assert is_invisible_watermark_available()
    assert sdxl_engine.xl and type(sdxl_engine.txt2img).__name__ == "StableDiffusionXLPipeline"
    assert sdxl_engine.txt2img.watermark is None
    assert sdxl_engine.img2img.watermark is None  # made with from_pipe


def test_sdxl_empty_negative_is_zeroed_in_a_mixed_cobatch(sdxl_engine: Engine):
    seen: list[torch.Tensor] = []
    handle = sdxl_engine.txt2img.unet.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True
    )
    plain = GenerationRequest("a red fox", seed=3, count=1, steps=1)
    try:
        sdxl_engine.generate([plain, plain.replace(negative_prompt="blurry", seed=4)])
    finally:
        handle.remove()
    negative = seen[0][:2]  # classifier-free guidance: the negative rows come first
    assert torch.count_nonzero(negative[0]) == 0  # no negative prompt: SDXL's zero embedding
    assert torch.count_nonzero(negative[1]) > 0  # "blurry", encoded


def test_sdxl_cobatched_image_equals_its_solo_image(sdxl_engine: Engine):
    plain = GenerationRequest("a red fox", seed=3, count=1, steps=2)
    alone = sdxl_engine.generate([plain])[0].images[0]
    mixed = sdxl_engine.generate([plain, plain.replace(negative_prompt="blurry", seed=4)])
    diff = np.abs(pixels(alone) - pixels(mixed[0].images[0]))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float rounding across batch sizes


def test_sdxl_vae_dtype_is_restored_after_an_out_of_memory_in_decode(sdxl_engine: Engine):
    """SDXL upcasts an fp16 VAE to fp32 to decode and casts it back only on success."""
    vae = sdxl_engine.txt2img.vae
    vae.to(torch.float16)  # as on a GPU in fp16 (the UNet stays fp32: CPU speed)

    def oom(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    handle = vae.decoder.register_forward_pre_hook(oom)
    try:
        with pytest.raises(OutOfMemory):
            sdxl_engine.generate([GenerationRequest("a red fox", seed=3, count=1, steps=1)])
        assert vae.dtype == torch.float16
    finally:
        handle.remove()
        vae.to(torch.float32)


def test_sdxl_decodes_in_bf16_beside_a_unet_of_another_dtype():
    """What ``prepare`` does for SDXL in fp16 on a bf16 GPU instead of the fp32 upcast."""
    settings = Settings(model={"name": "tiny-sdxl", "device": "cpu"})
    pipe = build_tiny_sdxl_pipeline()
    device = torch.device("cpu")
    engine = Engine(
        prepare(pipe, settings.model, name="tiny-sdxl", device=device, dtype=torch.float32),
        settings,
    )
    set_vae_dtype(engine.txt2img, torch.bfloat16)
    req = GenerationRequest("a red fox", seed=3, count=1, steps=1)
    image = engine.generate([req])[0].images[0]
    varied = engine.generate([engine.variation_request(req, image, strong=True)])[0].images[0]
    assert engine.txt2img.vae.dtype == torch.bfloat16 and not engine.txt2img.vae.config.force_upcast
    assert image.size == varied.size == (64, 64) and pixels(image).std() > 0


def test_sdxl_previews_use_sdxl_colours(sdxl_engine: Engine):
    assert sdxl_engine.latent_space == "sdxl"
    events: list[Any] = []
    sdxl_engine.generate(
        [GenerationRequest("a red fox", seed=3, count=1, steps=1)], progress=events.append
    )
    assert events[0].space == "sdxl"
    latent = torch.zeros(4, 8, 8)  # SDXL's zero latent is not grey: its fit has a bias
    sdxl_rgb = pixels(latents_preview(latent, space="sdxl"))[0, 0]
    assert sdxl_rgb.tolist() != pixels(latents_preview(latent, space="sd"))[0, 0].tolist()


# --- loading -------------------------------------------------------------------------------------


def _tiny_safety_checker() -> Any:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
    return StableDiffusionSafetyChecker(
        CLIPConfig(
            text_config={**small, "num_hidden_layers": 1},
            vision_config={**small, "num_hidden_layers": 1, "image_size": 32, "patch_size": 4},
            projection_dim=32,
        )
    )


def test_sd15_folder_loads_without_its_safety_checker(tmp_path: Path):
    """SD 1.5 repositories list a ~0.6 GB safety checker; it is neither downloaded nor loaded."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    tiny = build_tiny_pipeline()
    folder = tmp_path / "sd15"
    StableDiffusionPipeline(
        **{
            **tiny.components,
            "safety_checker": _tiny_safety_checker(),
            "feature_extractor": CLIPImageProcessor(crop_size=32, size=32),
        },
        requires_safety_checker=True,
    ).save_pretrained(folder)
    # Its weights are gone: loading them would fail, as downloading them would cost 0.6 GB.
    shutil.rmtree(folder / "safety_checker")
    model = load_model(ModelSettings(name=str(folder), device="cpu"))
    assert model.txt2img.safety_checker is None and model.img2img.safety_checker is None
    assert torch.equal(
        model.txt2img.unet.conv_in.weight, tiny.unet.conv_in.weight
    )  # the model itself did load


# An SDXL single file as Automatic1111 / ComfyUI users have them: the original (ldm) layout, with
# the second text encoder in OpenCLIP's names. Written here from the tiny pipeline; diffusers'
# own ``from_single_file`` converts it back, so equal weights prove the whole round trip.

_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _rename(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for new, old in table:
        if rest.startswith(new):
            return old + rest[len(new) :]
    return rest


def _by_rules(key: str, rules: tuple[tuple[str, Any], ...]) -> str | None:
    """The ldm name of ``key`` from the first matching (pattern, builder(a, b, rest)) rule."""
    for pattern, build in rules:
        if m := re.fullmatch(pattern, key):
            return build(int(m[1]), int(m[2] or 0), m[3])
    return None


def _unet_to_ldm(unet: Any) -> dict[str, torch.Tensor]:
    per = unet.config.layers_per_block + 1  # ldm counts resnets and the sampler per level
    up_attention = ["CrossAttn" in t for t in unet.config.up_block_types]
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    rules = (
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda i, j, r: f"input_blocks.{i * per + j + 1}.0.{_rename(r, _RESNET)}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
         lambda i, j, r: f"input_blocks.{i * per + j + 1}.1.{r}"),
        (r"down_blocks\.(\d+)\.downsamplers\.(0)\.conv\.(.*)",
         lambda i, _j, r: f"input_blocks.{(i + 1) * per}.0.op.{r}"),
        (r"mid_block\.resnets\.(\d+)\.()(.*)",
         lambda j, _i, r: f"middle_block.{2 * j}.{_rename(r, _RESNET)}"),
        (r"mid_block\.attentions\.(0)\.()(.*)", lambda _i, _j, r: f"middle_block.1.{r}"),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda i, j, r: f"output_blocks.{i * per + j}.0.{_rename(r, _RESNET)}"),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
         lambda i, j, r: f"output_blocks.{i * per + j}.1.{r}"),
        (r"up_blocks\.(\d+)\.upsamplers\.(0)\.(.*)",
         lambda i, _j, r: f"output_blocks.{i * per + per - 1}.{2 if up_attention[i] else 1}.{r}"),
    )  # fmt: skip
    out = {}
    for key, value in unet.state_dict().items():
        name = next(
            (old + key[len(new) :] for new, old in fixed.items() if key.startswith(new)), None
        )
        name = name or _by_rules(key, rules)
        assert name is not None, key
        out[f"model.diffusion_model.{name}"] = value
    return out


def _vae_to_ldm(vae: Any) -> dict[str, torch.Tensor]:
    last = len(vae.config.block_out_channels) - 1
    shortcut = (("conv_shortcut.", "nin_shortcut."),)
    rules = (
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda i, j, r: f"encoder.down.{i}.block.{j}.{_rename(r, shortcut)}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.()(.*)",
         lambda i, _j, r: f"encoder.down.{i}.downsample.{r}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda i, j, r: f"decoder.up.{last - i}.block.{j}.{_rename(r, shortcut)}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.()(.*)",
         lambda i, _j, r: f"decoder.up.{last - i}.upsample.{r}"),
    )  # fmt: skip
    out = {}
    for key, value in vae.state_dict().items():
        name = _by_rules(key, rules) or key
        if m := re.fullmatch(r"(\w+)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        if m := re.fullmatch(r"(\w+)\.mid_block\.attentions\.0\.(.*)", key):
            name = f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTENTION)}"
            value = value[:, :, None, None] if value.ndim == 2 else value  # 1x1 convolutions
        name = name.replace(".conv_norm_out.", ".norm_out.")
        out[f"first_stage_model.{name}"] = value
    return out


def _openclip_to_ldm(encoder: Any) -> dict[str, torch.Tensor]:
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    inner = (
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    )
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in encoder.state_dict().items():
        layer = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key)
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key in fixed:
            out[fixed[key]] = value
        elif layer and (q := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", layer[2])):
            qkv.setdefault(f"transformer.resblocks.{layer[1]}.attn.in_proj_{q[2]}", {})[q[1]] = (
                value
            )
        elif layer:
            out[f"transformer.resblocks.{layer[1]}.{_rename(layer[2], inner)}"] = value
    for name, parts in qkv.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {f"conditioner.embedders.1.model.{k}": v for k, v in out.items()}


def _sdxl_single_file_state(pipe: Any) -> dict[str, torch.Tensor]:
    clip_l = {  # ldm keeps CLIP-L's Hugging Face names, under text_model.
        "conditioner.embedders.0.transformer."
        + ("" if k.startswith("text_model.") else "text_model.")
        + k: v
        for k, v in pipe.text_encoder.state_dict().items()
        if not k.endswith("position_ids")
    }
    state = {
        **_unet_to_ldm(pipe.unet),
        **_vae_to_ldm(pipe.vae),
        **clip_l,
        **_openclip_to_ldm(pipe.text_encoder_2),
    }
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def _hub_cache_with_configs(folder: Path, cache: Path, repo: str) -> None:
    """Put a diffusers folder's configs (no weights) into a Hugging Face cache as ``repo``:
    a single file brings only weights, and diffusers reads the rest from the hub cache."""
    revision = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(
        folder,
        root / "snapshots" / revision,
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin"),
    )
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sdxl_single_file_loads_as_sdxl(
    suffix: str, sdxl_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pipe = build_tiny_sdxl_pipeline()
    cache = tmp_path / "cache"  # model.cache_dir: where the configs must be looked up
    _hub_cache_with_configs(sdxl_folder, cache, "stabilityai/stable-diffusion-xl-base-1.0")
    state = _sdxl_single_file_state(pipe)
    path = tmp_path / f"my-sdxl{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    model = load_model(ModelSettings(name=str(path), device="cpu", cache_dir=cache))
    assert type(model.txt2img).__name__ == "StableDiffusionXLPipeline"
    assert model.defaults.family == "sdxl"
    assert model.txt2img.watermark is None and model.img2img.watermark is None
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        mine, loaded = getattr(pipe, part).state_dict(), getattr(model.txt2img, part).state_dict()
        assert all(torch.equal(mine[k], loaded[k]) for k in mine if k in loaded), part


# --- torch.compile: doctor refuses where Triton cannot build ---------------------------------


def test_doctor_refuses_compile_without_a_c_compiler(monkeypatch: pytest.MonkeyPatch):
    import shutil

    from bot import doctor

    settings = Settings(model={"name": "tiny", "compile": True})
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda _name: None)  # a slim image: no cc
    check = doctor.check_compile(settings)
    assert check is not None and check.status == "fail"
    assert "C compiler" in check.message and "model.compile=false" in check.fix
    assert doctor.check_compile(Settings(model={"name": "tiny"})) is None  # compile off: no check


def test_doctor_accepts_compile_where_the_tools_are(monkeypatch: pytest.MonkeyPatch, tmp_path):
    import sysconfig

    from bot import doctor

    (tmp_path / "Python.h").write_text("/* headers */")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    monkeypatch.setenv("CC", "gcc")
    check = doctor.check_compile(Settings(model={"name": "tiny", "compile": True}))
    assert check is not None and check.status == "ok"


# --- energy: NVML, per batch, the card CUDA uses -----------------------------------------------


class FakeNvml:
    """Stands in for pynvml (no NVIDIA driver here): cards with UUIDs, bus ids and counters."""

    def __init__(self, cards: list[tuple[str, str]]) -> None:
        self.cards = cards  # (uuid, bus id) in NVML's order
        self.counter_mj = [0] * len(cards)

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return self.cards[h][0]

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:  # noqa: N802
        from types import SimpleNamespace

        return SimpleNamespace(busId=self.cards[h][1].encode())

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:  # noqa: N802
        return self.counter_mj[h]


@pytest.fixture
def second_card_visible(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """CUDA_VISIBLE_DEVICES=1: CUDA's device 0 is NVML's device 1 (no GPU here: torch.cuda and
    NVML are both stood in for)."""
    from types import SimpleNamespace

    nvml = FakeNvml(
        [
            ("GPU-11111111-aaaa-bbbb-cccc-000000000000", "00000000:17:00.0"),
            ("GPU-22222222-aaaa-bbbb-cccc-000000000000", "00000000:3B:00.0"),
        ]
    )
    props = SimpleNamespace(
        uuid="22222222-aaaa-bbbb-cccc-000000000000",
        pci_domain_id=0,
        pci_bus_id=0x3B,
        pci_device_id=0,
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _i: props)
    return nvml


def test_nvml_card_is_the_one_cuda_uses(second_card_visible: FakeNvml):
    from core.metrics import nvml_handle_for_cuda_device

    assert nvml_handle_for_cuda_device(second_card_visible) == 1
    second_card_visible.cards[1] = ("GPU-unknown", "00000000:3B:00.0")  # no UUID: the bus says
    assert nvml_handle_for_cuda_device(second_card_visible) == 1


def test_energy_per_image_counts_only_generation(second_card_visible: FakeNvml):
    from core.metrics import GpuEnergy

    meter = GpuEnergy()
    counter = second_card_visible.counter_mj
    assert meter.wh_per_image() is None  # nothing made yet: "not measured"
    for images in (4, 2):
        counter[1] += 500_000  # idle, or another process: 500 J not ours
        counter[0] += 900_000  # the other card: never ours
        with meter.batch(lambda images=images: images):
            counter[1] += 36_000 * images  # 36 J per image while generating
    assert meter.images == 6
    assert meter.wh_per_image() == pytest.approx(36 / 3600)


def test_energy_is_not_measured_without_nvml(monkeypatch: pytest.MonkeyPatch):
    from core.metrics import GpuEnergy

    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    meter = GpuEnergy()
    with meter.batch(lambda: 4):
        pass
    assert meter.read_mj() is None and meter.wh_per_image() is None
