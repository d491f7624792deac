"""Progress previews are posted before post-processing runs, so each one gets the final image's
output check first (NudeNet: nudity and the deepfake rule), and nothing of them stays on a
message whose job was cancelled. Real bot, emulator, tiny model, NudeNet.

Whether a preview gets through the progress throttle depends on the machine's speed, so the
engine is wrapped to hold each step (bounded) until the bot has edited the message: what is
asserted is what was shown, not how many edits happened to be sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage import data

from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness, hold_steps, step_edits


@pytest.fixture
async def quick(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


def _files_shown(emu: Any, iid: int) -> list[str]:
    message = emu.original_message(iid)
    return [a.filename for a in message.attachments] if message else []


async def test_a_cancelled_job_leaves_no_preview_on_its_message(
    quick: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = quick.emu
    iid_box: list[int] = []
    hold_steps(
        quick.engine,
        monkeypatch,
        lambda: (
            bool(iid_box) and any(n.endswith("_preview.jpg") for n in _files_shown(emu, iid_box[0]))
        ),
    )
    iid = await quick.imagine("a harbour in fog --count 1 --steps 30", user=emu.bob)
    iid_box.append(iid)
    await emu.wait_for(lambda: _files_shown(emu, iid), 60, "a preview on the message")

    cancel = await emu.send_slash("cancel", {}, user=emu.bob)
    assert "cancelled" in (await _ephemeral_reply(emu, cancel)).content
    message = await emu.wait_for(
        lambda: (m := emu.original_message(iid)) and "Cancelled" in (m.content or "") and m,
        60,
        "the cancel shown",
    )
    assert message.attachments == [], "the last preview was removed with the cancel"


async def test_previews_get_the_output_check_before_they_are_posted(
    quick: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real photo with a face as the preview: shown for an anonymous prompt, withheld (the
    step text still shown) for a prompt naming a real person with no clear style."""
    emu = quick.emu
    face = Image.fromarray(data.astronaut())
    watched: list[int] = []
    hold_steps(
        quick.engine,
        monkeypatch,
        lambda: bool(watched) and bool(step_edits(emu, watched[-1])),
        face,
    )

    anonymous = await quick.imagine("a woman at the beach --count 1 --steps 6")
    watched.append(anonymous)
    await quick.result_of(anonymous)
    shown = [r for r in step_edits(emu, anonymous) if r.files]
    assert shown, "the anonymous prompt's preview was posted"

    named = await quick.imagine("Taylor Swift at the beach --count 1 --steps 6")
    watched.append(named)
    await quick.result_of(named)
    steps = step_edits(emu, named)
    assert steps, "the step text is still shown"
    assert not [r for r in steps if r.files], "no preview of a real person's face was posted"
