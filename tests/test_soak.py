"""The soak benchmark's short form, in CI: the bot process under a mixed load (prompts,
hostile uploads, buttons, reactions, cancels) killed with SIGKILL during it; every accepted
interaction ends with exactly one result or a message saying why not."""

from __future__ import annotations

from bench.soak import soak


async def test_short_soak_loses_nothing_and_duplicates_nothing() -> None:
    result = await soak(seconds=40, kill_every=15, rate=0.8, seed=7, drain_s=240)
    assert result["kills"] >= 1 and result["accepted"] >= 5, result
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["clean_exit"], result
