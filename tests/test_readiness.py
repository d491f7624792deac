"""Start-up's fail-closed checks (``moderation/readiness.py``) must never refuse a sound bot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from moderation import readiness


def test_the_watermark_check_passes_for_every_sound_key(tmp_path: Path) -> None:
    """A random test picture failed about 1 start in 8 (fine noise is the mark's weak spot):
    40 fresh instance keys must all pass."""
    for i in range(40):
        settings = SimpleNamespace(keys_dir=tmp_path / f"keys{i}")
        assert readiness.check_watermark(settings) is None, i


def test_the_gate_check_passes() -> None:
    assert readiness.check_gate() is None
