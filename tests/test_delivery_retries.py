"""Discord failing for a while (5xx, dropped connections) does not lose a result, and a failure
that keeps recurring ends with the reason on the job and a message to the user, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.test_bot_e2e import Harness, _harness

EDIT = "/webhooks/{app_id}/{token}/messages/{message_id}"


def _with_files(record) -> bool:
    """The result (files and buttons), not a progress edit (which may carry a preview)."""
    return (
        bool(record.files) and isinstance(record.json, dict) and bool(record.json.get("components"))
    )


@pytest.fixture
async def flaky(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(
        discord_emulator,
        tiny_engine,
        tmp_path,
        real_postprocess=False,
        delivery_attempts=3,
        delivery_backoff_s=0.05,
    ) as h:
        yield h


async def test_a_result_is_retried_through_dropped_connections_and_5xx(flaky: Harness) -> None:
    emu = flaky.emu
    emu.fail_next("PATCH", EDIT, times=1, disconnect=True, when=_with_files)
    emu.fail_next("PATCH", EDIT, times=1, status=502, when=_with_files)
    iid = await flaky.imagine("a lighthouse --count 1")
    result = await flaky.result_of(iid)
    job = await flaky.delivered(iid)
    assert result.attachments and job.delivery["delivery_attempts"] >= 1
    assert "failed" not in job.delivery
    injected = [r for r in emu.requests if r.injected]
    assert injected, "the faults were hit"
    results = [r for r in emu.interaction_responses(iid) if _with_files(r) and r.ok]
    assert len(results) == 1, "delivered exactly once"


async def test_a_failure_that_keeps_recurring_is_recorded_and_told(flaky: Harness) -> None:
    emu = flaky.emu
    emu.fail_next("PATCH", EDIT, times=100, status=503, when=_with_files)
    iid = await flaky.imagine("a lighthouse --count 1")
    job = await flaky.delivered(iid, timeout=120)
    assert job.delivery["delivery_attempts"] == 3
    assert "Discord kept failing (HTTP 503) after 3 tries" in job.delivery["failed"]
    told = await emu.wait_for(
        lambda: (m := emu.original_message(iid)) and "could not be sent" in m.content and m,
        30,
        "the user is told",
    )
    assert job.id in told.content
    # Claimed: a restart does not try again (and again) to send it.
    assert not await flaky.store.undelivered_jobs()
