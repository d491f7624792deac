"""``imagine-bot generate / vary / upscale`` end to end on the offline ``tiny`` model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bot.cli import main


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch):
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    monkeypatch.delenv("IMAGINE_MODEL__NAME", raising=False)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def run(*argv: str) -> int:
    return main(["generate", "--model", "tiny", "--device", "cpu", *argv])


def test_same_seed_same_pixels_other_seed_differs_and_json(tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert run("a red fox", "--seed", "7", "-o", str(a), "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert run("a red fox", "--seed", "7", "-o", str(b)) == 0
    assert run("a red fox", "--seed", "8", "-o", str(c)) == 0
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))

    assert meta["seeds"] == [7, 8, 9, 10]
    assert meta["model"] == "tiny" and (meta["width"], meta["height"]) == (64, 64)
    assert {"load_s", "generate_s", "batch_s"} <= set(meta["timings"])
    assert meta["files"] == [str(a)] + [str(tmp_path / f"a_{i}.png") for i in range(1, 5)]
    assert Image.open(a).size == (128, 128)  # 2x2 grid
    single = Image.open(tmp_path / "a_3.png")
    assert single.size == (64, 64)
    assert single.info["parameters"] == (
        "a red fox\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 9, Size: 64x64, Model: tiny"
    )


def test_options_reach_the_request(tmp_path, capsys):
    out = tmp_path / "wide.png"
    code = run(
        "a city", "--ar", "2:1", "--steps", "2", "--guidance", "3", "--count", "1",
        "--negative", "blurry", "--scheduler", "ddim", "--seed", "1", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0
    meta = json.loads(capsys.readouterr().out)
    assert (meta["width"], meta["height"], meta["steps"], meta["guidance"]) == (88, 48, 2, 3.0)
    assert meta["negative_prompt"] == "blurry" and meta["scheduler"] == "ddim"
    assert meta["files"] == [str(out)]
    assert "Negative prompt: blurry" in Image.open(out).info["parameters"]


def test_init_image_and_vary_and_upscale(tmp_path, capsys):
    src = tmp_path / "src.png"
    assert run("a fox", "--seed", "3", "--count", "1", "-o", str(src)) == 0
    sketch = tmp_path / "sketch.png"
    Image.new("RGB", (100, 50), (255, 255, 255)).save(sketch)
    out = tmp_path / "from_sketch.png"
    assert (
        run("a fox", "--init", str(sketch), "--strength", "0.5", "--count", "1", "-o", str(out))
        == 0
    )
    assert Image.open(out).size == (88, 48)  # init image's aspect ratio at the default area
    capsys.readouterr()

    vary = tmp_path / "vary.png"
    assert (
        main(
            [
                "vary",
                str(src),
                "--strong",
                "--model",
                "tiny",
                "--count",
                "2",
                "-o",
                str(vary),
                "--json",
            ]
        )
        == 0
    )
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "variation" and meta["prompt"] == "a fox" and meta["strength"] == 0.65
    assert len(meta["seeds"]) == 2 and (tmp_path / "vary_2.png").exists()

    up = tmp_path / "up.png"
    assert main(["upscale", str(src), "--model", "tiny", "-o", str(up), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert Image.open(up).size == (128, 128) and meta["kind"] == "upscale"


def test_vary_needs_a_prompt_when_the_image_has_none(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    assert main(["vary", str(plain), "--model", "tiny", "-o", str(tmp_path / "v.png")]) == 2
    assert "carries no prompt; give one with --prompt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["", "--seed", "1"], "prompt is empty"),
        (["x" * 10_000], "prompt is 10000 characters long; the limit is 2000"),
        (["x", "--width", "0"], "width is 0 px; allowed range is 32 to 2048 px"),
        (["x", "--height", "100000"], "height is 100000 px; allowed range is 32 to 2048 px"),
        (["x", "--ar", "100:1"], "allowed range is 1:4 to 4:1"),
        (["x", "--steps", "0"], "steps is 0; allowed range is 1 to 150"),
        (["x", "--steps", "10000"], "steps is 10000; allowed range is 1 to 150"),
        (["x", "--guidance", "nan"], "guidance must be a finite number between 0 and 30"),
        (["x", "--count", "9"], "image count is 9; allowed range is 1 to 4"),
    ],
)
def test_bad_input_gives_a_clear_error(argv, message, capsys, tmp_path):
    # A model that does not exist: the request is refused before any model is loaded.
    code = main(
        [
            "generate",
            "--model",
            str(tmp_path / "m.safetensors"),
            *argv,
            "-o",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_missing_model_file(tmp_path, capsys):
    code = main(
        [
            "generate",
            "x",
            "--model",
            str(tmp_path / "model.safetensors"),
            "-o",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2
    assert (
        "does not exist; give a hub id, a folder, a checkpoint file or tiny"
        in capsys.readouterr().err
    )


def test_bad_init_images(tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    bomb = tmp_path / "bomb.png"
    from tests.test_request import _png_header_only

    bomb.write_bytes(_png_header_only(20_000, 20_000))
    assert run("x", "--init", str(text), "-o", str(tmp_path / "o.png")) == 2
    assert "init image is not a recognised image" in capsys.readouterr().err
    assert run("x", "--init", str(bomb), "-o", str(tmp_path / "o.png")) == 2
    assert "init image is too large" in capsys.readouterr().err
