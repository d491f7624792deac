"""The instance's watermark secret: made once next to the C2PA key, readable only by the bot.

Why a secret at all: without one, anyone who reads the code can mint a valid mark naming any
job (framing its author) and walk every payload. With it, the patterns that carry the bits and
the HMAC tag that checks them come from a key only this instance holds, so a mark is either
made here or fails its tag (see ``moderation/watermark.py`` for the false-detection ceiling).
Losing the file means older images' marks can no longer be read; back it up with the C2PA key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from core.errors import UserInputError

log = logging.getLogger(__name__)

KEY_FILE = "watermark.key"
KEY_BYTES = 32


class WatermarkKey:
    """A secret plus what is derived from it (derivations are keyed HMAC-SHA256 streams)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a watermark key needs at least 16 bytes of secret")
        self._secret = bytes(secret)
        # Short public fingerprint, to tell keys apart in logs and in `doctor` (not secret).
        self.fingerprint = self.derive(b"fingerprint", 4).hex()

    @classmethod
    def generate(cls) -> WatermarkKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def derive(self, label: bytes, size: int) -> bytes:
        """``size`` keyed pseudo-random bytes for ``label`` (HMAC-SHA256 in counter mode)."""
        out = b""
        counter = 0
        while len(out) < size:
            out += hmac.new(
                self._secret, label + counter.to_bytes(4, "big"), hashlib.sha256
            ).digest()
            counter += 1
        return out[:size]

    def seed(self, label: bytes) -> int:
        """A 128-bit keyed seed for ``numpy.random.default_rng``."""
        return int.from_bytes(self.derive(label, 16), "big")

    def tag(self, message: bytes) -> int:
        """Keyed 64-bit tag of ``message``; callers keep as many low bits as they check."""
        digest = hmac.new(self._secret, b"tag" + message, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big")

    def __repr__(self) -> str:  # never print the secret
        return f"WatermarkKey({self.fingerprint})"


def load_or_create_key(keys_dir: Path) -> WatermarkKey:
    """This instance's key from ``keys_dir/watermark.key``, created (mode 0600) when missing.

    The mode is reset to 0600 on every call (every start): a copy or restore that widened it
    is narrowed again. A damaged file is an error, never silently replaced: a new key would
    make every mark made so far unreadable.
    """
    path = Path(keys_dir) / KEY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(KEY_BYTES) + "\n")
            log.info("created the watermark key %s", path)
        os.chmod(path, 0o600)
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise UserInputError(
            f"cannot read or create the watermark key {path}: {exc.strerror or exc}; "
            "make the keys folder writable by the bot"
        ) from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise UserInputError(
            f"the watermark key {path} is damaged (expected {2 * KEY_BYTES} hex digits); "
            "restore it from a backup (a new key cannot read the marks made so far)"
        )
    return WatermarkKey(secret)


def key_for_settings(settings: object) -> WatermarkKey:
    """The instance key under ``settings.keys_dir`` (next to the C2PA signing key)."""
    return load_or_create_key(Path(settings.keys_dir))  # type: ignore[attr-defined]
