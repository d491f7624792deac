"""The data directory is owner-only whatever the umask: prompts, live interaction tokens,
uploads and the signing key are not for other local users."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.private_files import private_umask, secure_data_dir
from core.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the common default: files 0644, folders 0755
    try:
        yield
    finally:
        os.umask(old)


async def test_a_new_store_is_owner_only_under_umask_022(tmp_path: Path, loose_umask) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with await Store.open(settings.db_path) as store:
        await store.set_value("k", "v")  # writes the WAL
        assert mode(settings.data_dir) == 0o700
        assert mode(settings.db_path) == 0o600
        wal = settings.db_path.with_name("imagine.db-wal")
        assert wal.exists() and mode(wal) == 0o600


def test_every_start_repairs_modes_and_the_key_files(tmp_path: Path, loose_umask) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.keys_dir.mkdir(parents=True)
    key = settings.keys_dir / "signer.key"
    key.write_bytes(b"secret")  # 0644, as an older version or a restore may leave it
    settings.db_path.write_bytes(b"")
    os.chmod(settings.data_dir, 0o755)
    secure_data_dir(settings)
    assert mode(settings.data_dir) == 0o700 and mode(settings.keys_dir) == 0o700
    assert mode(key) == 0o600 and mode(settings.db_path) == 0o600


def test_the_bot_process_creates_files_owner_only(tmp_path: Path, loose_umask) -> None:
    previous = private_umask()
    try:
        assert previous == 0o022
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "0.png").write_bytes(b"png")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "images") == 0o700 and mode(tmp_path / "images" / "0.png") == 0o600
