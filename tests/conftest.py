"""Shared fixtures. Engine fixtures first; other parts append theirs below."""

from __future__ import annotations

# Imported now, not by its plugin's end-of-session summary: pytest rewrites (ast.parse) a plugin
# it imports, and CPython 3.11.7's AST construction is not thread-safe (python/cpython#106905,
# pytest-dev/pytest#10763: "AST constructor recursion depth mismatch"), so a parse at session end
# racing a bot thread that still imports can crash a run whose tests all passed.
import hypothesis  # noqa: F401
import pytest

from core.config import Settings


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the offline ``tiny`` model on CPU, with a private data dir."""
    data = tmp_path_factory.mktemp("imagine-data")
    return Settings(
        data_dir=data, model={"name": "tiny", "device": "cpu", "cache_dir": data / "cache"}
    )


@pytest.fixture(scope="session")
def tiny_engine(tiny_settings: Settings):
    """One real ``Engine`` on the random ``tiny`` pipeline (CPU, no download), built once per session."""
    from generation.engine import Engine

    return Engine.load(tiny_settings)


@pytest.fixture(scope="session")
def tiny_engine_128(tiny_settings: Settings):
    """The tiny engine making 128 px images (an upscale is 256 px, where the watermark reads
    back reliably), with /blend's tiny IP-Adapter: for end-to-end tests of those features."""
    from generation.engine import Engine

    model = tiny_settings.model.model_copy(update=TINY_128)
    return Engine.load(tiny_settings.model_copy(update={"model": model}))


TINY_128 = {"default_size": 128, "ip_adapter": "tiny"}  # the bot's side of tiny_engine_128


# --- Discord emulator (playground/emulator) ----------------------------------------------------


@pytest.fixture
async def discord_emulator():
    """A started loopback Discord with discord.py pointed at it (Route.BASE + gateway URL).

    Yields a ``playground.emulator.Emulator`` with the default world (``emu.guild``,
    ``emu.general``, ``emu.nsfw_channel``, ``emu.mod_log``, ``emu.locked_channel``, ``emu.alice``,
    ``emu.bob``, ``emu.moderator``); log in with ``emu.token``. Restores discord.py afterwards.
    """
    from tests.emulator_client import running_emulator

    async with running_emulator() as emu:
        yield emu
