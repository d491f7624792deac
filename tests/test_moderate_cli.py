"""``imagine-bot moderate`` end to end through the real entry point."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from skimage import data

from bot.cli import main


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["moderate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_allowed_prompt_exits_0(capsys) -> None:
    code, out, _ = run(capsys, "a cozy cabin in the snow")
    assert code == 0 and out.startswith("ALLOW")


def test_blocked_prompt_exits_1_with_reason_and_evidence(capsys) -> None:
    code, out, _ = run(capsys, "n.u.d.e woman")
    assert code == 1
    assert out.startswith("BLOCK  (sexual)")
    assert "reason: Blocked: sexual or nude content" in out
    assert "sexual: 'nude' (from 'n.u.d.e')" in out


def test_policy_levels(capsys) -> None:
    assert run(capsys, "caricature of Abraham Lincoln")[0] == 0
    assert run(capsys, "caricature of Abraham Lincoln", "--policy", "strict")[0] == 1
    assert run(capsys, "photo of Abraham Lincoln", "--policy", "off")[0] == 0


def test_nsfw_channel_spoiler_exits_0_with_a_note(capsys) -> None:
    code, out, err = run(capsys, "a nude statue", "--nsfw-channel", "--nsfw-mode", "spoiler")
    assert code == 0 and out.startswith("SPOILER") and "spoiler" in err
    assert run(capsys, "a nude statue", "--nsfw-channel")[0] == 1  # nsfw_mode block by default


def test_json_output(capsys) -> None:
    code, out, _ = run(capsys, "photo of Taylor Swift, 4k", "--json")
    d = json.loads(out)
    assert code == 1 and d["action"] == "block" and d["categories"] == ["real_person"]
    assert d["details"]["deepfake"]["names"] == ["Taylor Swift"]


def test_image_check(capsys, astronaut_png: str) -> None:
    code, out, _ = run(capsys, "--image", astronaut_png)
    assert code == 0 and "detections: FACE_FEMALE 0.72" in out
    code, out, _ = run(capsys, "--image", astronaut_png, "--json")
    d = json.loads(out)
    assert [x["label"] for x in d["detections"]] == ["FACE_FEMALE"]
    # With a prompt naming a real person, the realistic face makes it a deepfake risk.
    code, out, _ = run(capsys, "Taylor Swift at a cafe", "--image", astronaut_png)
    assert code == 1 and "realistic face" in out


def test_init_image_check(capsys, astronaut_png: str) -> None:
    code, out, _ = run(capsys, "make her undressed", "--image", astronaut_png, "--as-init",
                       "--nsfw-channel", "--nsfw-mode", "allow")
    assert code == 1 and "uploaded photo of a real face" in out
    assert run(capsys, "make her smile", "--image", astronaut_png, "--as-init")[0] == 0
    code, _, err = run(capsys, "--image", astronaut_png, "--as-init")
    assert code == 2 and "--as-init needs both" in err


def test_bad_images_exit_2_with_a_clear_message(capsys, tmp_path, astronaut_png: str) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(open(astronaut_png, "rb").read()[:5000])
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)  # 48 megapixels, a small file
    cases = {
        text: "not a recognised image",
        truncated: "truncated or corrupt",
        huge: "megapixels",
        tmp_path / "missing.png": "does not exist",
    }
    for path, message in cases.items():
        code, out, err = run(capsys, "--image", str(path))
        assert code == 2 and message in err and "Traceback" not in err, (path, err)


def test_nothing_to_check_is_a_clear_error(capsys) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "give a PROMPT" in err
