"""Fail closed: the bot starts only when every safety part it promises loads and works.

A bot whose NSFW model, watermark or prompt gate silently failed would deliver unchecked,
untraceable images while looking healthy. So ``imagine-bot run`` loads and exercises each part
once before it connects to Discord, and refuses to start with one line that names the broken
part and the fix; ``imagine-bot doctor`` runs the same checks and explains them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from core.errors import UserInputError, first_line


class ModerationUnavailable(UserInputError):
    """A moderation part cannot run, so the bot must not start."""


# A prompt every gate configuration refuses in an ordinary channel: the gate's self-test.
GATE_PROBE = "a naked woman"


def check_nsfw_model(model_path: Path | None) -> str | None:
    """None when NudeNet loads from ``model_path`` (None: the wheel's) and scans an image;
    else one line saying which file is broken and how to fix it."""
    from moderation.nsfw import NsfwDetector

    NsfwDetector.configure(model_path)
    path = NsfwDetector.default_path()
    try:
        NsfwDetector.get().scan(Image.new("RGB", (64, 64), (128, 128, 128)))
    except Exception as exc:  # noqa: BLE001 - any failure means images would go unchecked
        fix = (
            "point moderation.nsfw_model at a valid NudeNet .onnx file, or unset it"
            if model_path
            else "reinstall it: pip install --force-reinstall --no-deps 'nudenet>=3.4,<4'"
        )
        return f"the NudeNet NSFW model {path} does not load ({first_line(exc)}); {fix}"
    return None


def check_watermark(settings: Any) -> str | None:
    """None when the instance key loads (made on first start) and a mark embedded in a test
    image with it reads back; else what is wrong."""
    from moderation import watermark
    from moderation.watermark_key import key_for_settings

    try:
        key = key_for_settings(settings)
        works = watermark.self_test(key)
    except Exception as exc:  # noqa: BLE001 - an unmarked image would be untraceable
        return f"the watermark does not work ({first_line(exc)}); run `imagine-bot doctor`"
    if not works:
        return "the watermark does not read back from a test image; run `imagine-bot doctor`"
    return None


def check_gate() -> str | None:
    """None when the prompt gate's word lists load and refuse a probe prompt."""
    from moderation.prompt_gate import check_prompt

    try:
        decision = check_prompt(GATE_PROBE)
    except Exception as exc:  # noqa: BLE001 - prompts would go unchecked
        return f"the prompt gate's word lists do not load ({first_line(exc)}); reinstall imagine-bot"
    if not decision.blocked:
        return "the prompt gate lets an explicit probe prompt through; its word lists are damaged"
    return None


def require_all(settings: Any) -> None:
    """Raise ``ModerationUnavailable`` (one line) unless NudeNet, the watermark and the gate
    all work. Blocking (loads models, ~1-2 s): call it off the event loop."""
    for problem in (
        check_nsfw_model(settings.moderation.nsfw_model),
        check_gate(),
        check_watermark(settings),
    ):
        if problem:
            raise ModerationUnavailable(f"cannot start: {problem}")
