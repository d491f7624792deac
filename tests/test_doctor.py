"""``imagine-bot doctor`` and start-up preflight: each check's failure message, on real conditions.

Real files, real SQLite, real ONNX loading; the Hugging Face hub is a loopback HTTP server that
answers like the real API (this machine cannot reach the real one).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import doctor
from bot.cli import main
from core.config import Settings
from core.errors import UserInputError
from core.store import SCHEMA_VERSION, Store

# Shaped like a bot token (base64 of a user id . timestamp . hmac); not a real one.
GOOD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    for key in list(__import__("os").environ):
        if key.startswith("IMAGINE_"):
            monkeypatch.delenv(key)


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    kw.setdefault("data_dir", tmp_path / "data")
    kw.setdefault("discord", {"token": GOOD_TOKEN})
    kw.setdefault("model", {"name": "tiny", "cache_dir": tmp_path / "hf"})
    return Settings(**kw)


# --- python / torch -------------------------------------------------------------------------


def test_old_python_fails():
    check = doctor.check_python((3, 9, 18))
    assert check.status == "fail"
    assert "Python 3.9.18 is too old" in check.message and "3.10" in check.message
    assert doctor.check_python((3, 11, 7)).status == "ok"


def test_torch_reports_device_and_fails_when_cuda_is_required_but_missing(tmp_path):
    import torch

    check = doctor.check_torch(make_settings(tmp_path, model={"device": "cuda"}))
    if torch.cuda.is_available():
        assert check.status == "ok" and "GiB memory" in check.message
    else:
        assert check.status == "fail"
        assert "model.device is 'cuda' but" in check.message
        assert "CUDA build of torch" in check.fix and "--gpus" in check.fix
        auto = doctor.check_torch(make_settings(tmp_path))
        assert auto.status == "warn" and "CPU" in auto.message


# --- token ----------------------------------------------------------------------------------


def test_missing_token_fails(tmp_path):
    check = doctor.check_token(make_settings(tmp_path, discord={}))
    assert check.status == "fail"
    assert check.message == "no Discord bot token is set"
    assert "DISCORD_TOKEN" in check.fix and "Reset Token" in check.fix


def test_unreadable_token_file_fails(tmp_path):
    check = doctor.check_token(make_settings(tmp_path, discord={"token_file": tmp_path / "nope"}))
    assert check.status == "fail"
    assert "cannot read the token file" in check.message and "nope" in check.message


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (f"Bot {GOOD_TOKEN}", "starts with 'Bot '"),
        (f'"{GOOD_TOKEN}"', "wrapped in quotes"),
        ("123456789012345678", "application or user id"),
        ("a" * 64, "public key"),
        ("AbCdEfGhIjKlMnOpQrStUvWxYz012345", "client secret"),
        (
            "aGVsbG8gd29ybGQ.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB",
            "does not encode a user id",
        ),
        ("not a token at all", "not shaped like a bot token"),
    ],
)
def test_wrong_token_format_names_the_mistake_without_showing_it(tmp_path, token, problem):
    check = doctor.check_token(make_settings(tmp_path, discord={"token": token}))
    assert check.status == "fail"
    assert problem in check.message
    assert token not in check.message + check.fix


def test_good_token_shows_bot_id_not_token(tmp_path):
    check = doctor.check_token(make_settings(tmp_path))
    assert check.status == "ok"
    assert "123456789012345678" in check.message
    assert GOOD_TOKEN not in check.message


# --- data dir / disk ------------------------------------------------------------------------


def test_data_dir_that_is_a_file_fails(tmp_path):
    target = tmp_path / "data"
    target.write_text("oops")
    check = doctor.check_data_dir(make_settings(tmp_path, data_dir=target))
    assert check.status == "fail" and "is a file, not a folder" in check.message


def test_data_dir_under_a_file_fails(tmp_path):
    (tmp_path / "blocker").write_text("")
    check = doctor.check_data_dir(make_settings(tmp_path, data_dir=tmp_path / "blocker" / "data"))
    assert check.status == "fail"
    assert "cannot be created" in check.message and "blocker is a file" in check.message
    check = doctor.check_data_dir(
        make_settings(tmp_path, data_dir=tmp_path / "blocker" / "data"), create=True
    )
    assert check.status == "fail" and "cannot write in" in check.message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux sysfs")
def test_read_only_data_dir_fails_even_for_root():
    # Tests run as root, for whom mode bits mean nothing; sysfs refuses new files to everyone,
    # like a read-only mount does, so the write probe must catch it.
    check = doctor.check_data_dir(Settings(data_dir=Path("/sys")))
    assert check.status == "fail"
    assert "cannot write in /sys" in check.message
    assert "writable" in check.fix


def test_writable_data_dir_is_ok_and_created_on_request(tmp_path):
    settings = make_settings(tmp_path)
    check = doctor.check_data_dir(settings)
    assert check.status == "ok" and "created on first start" in check.message
    assert not settings.data_dir.exists()  # doctor never changes anything
    assert doctor.check_data_dir(settings, create=True).status == "ok"
    assert settings.data_dir.is_dir()


def test_full_disk_fails(tmp_path):
    check = doctor.check_disk(make_settings(tmp_path, ops={"min_free_disk_mb": 10**12}))
    assert check.status == "fail"
    assert "MB free" in check.message and "ops.min_free_disk_mb" in check.message
    assert "free disk space" in check.fix
    assert doctor.check_disk(make_settings(tmp_path, ops={"min_free_disk_mb": 1})).status == "ok"


# --- database -------------------------------------------------------------------------------


def test_missing_database_is_fine(tmp_path):
    check = doctor.check_database(make_settings(tmp_path))
    assert check.status == "ok" and "created on the first start" in check.message


async def _make_db(path: Path) -> None:
    store = await Store.open(path)
    await store.close()


def test_current_database_opens(tmp_path):
    import asyncio

    settings = make_settings(tmp_path)
    asyncio.run(_make_db(settings.db_path))
    check = doctor.check_database(settings)
    assert check.status == "ok"
    assert f"schema version {SCHEMA_VERSION} (current)" in check.message


def test_corrupt_database_fails(tmp_path):
    settings = make_settings(tmp_path)
    settings.data_dir.mkdir()
    settings.db_path.write_bytes(b"this is not sqlite at all" * 100)
    check = doctor.check_database(settings)
    assert check.status == "fail"
    assert "not an SQLite database" in check.message and "restore a backup" in check.fix
    assert settings.db_path.read_bytes().startswith(b"this is not")  # left untouched


def test_truncated_database_fails(tmp_path):
    import asyncio

    settings = make_settings(tmp_path)
    asyncio.run(_make_db(settings.db_path))
    data = settings.db_path.read_bytes()
    settings.db_path.write_bytes(data[: 4096 + 100])  # header intact, pages missing
    check = doctor.check_database(settings)
    assert check.status == "fail"
    assert "cannot be read" in check.message or "damaged" in check.message


def test_database_from_newer_release_fails_and_older_warns(tmp_path):
    settings = make_settings(tmp_path)
    settings.data_dir.mkdir()
    with sqlite3.connect(settings.db_path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    check = doctor.check_database(settings)
    assert check.status == "fail" and "newer than this imagine-bot understands" in check.message
    assert "upgrade imagine-bot" in check.fix

    with sqlite3.connect(settings.db_path) as db:
        db.execute("PRAGMA user_version=0")
    check = doctor.check_database(settings)
    assert check.status == "warn" and "upgraded to" in check.message
    with sqlite3.connect(settings.db_path) as db:  # the doctor did not migrate it
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0


def test_database_path_that_is_a_folder_fails(tmp_path):
    settings = make_settings(tmp_path)
    settings.db_path.mkdir(parents=True)
    check = doctor.check_database(settings)
    assert check.status == "fail" and "is a folder" in check.message


# --- model ----------------------------------------------------------------------------------


def test_tiny_model_warns(tmp_path):
    check = doctor.check_model(make_settings(tmp_path))
    assert check.status == "warn" and "random test model" in check.message


def test_nonexistent_model_path_fails(tmp_path):
    missing = tmp_path / "models" / "dreamshaper.safetensors"
    check = doctor.check_model(make_settings(tmp_path, model={"name": str(missing)}))
    assert check.status == "fail"
    assert f"model {missing} does not exist" in check.message


def test_model_file_with_wrong_suffix_fails(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    check = doctor.check_model(make_settings(tmp_path, model={"name": str(weights)}))
    assert check.status == "fail" and "not a .safetensors or .ckpt" in check.message


def test_model_folder_needs_model_index(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    check = doctor.check_model(make_settings(tmp_path, model={"name": str(folder)}))
    assert check.status == "fail" and "no model_index.json" in check.message
    (folder / "model_index.json").write_text("{}")
    assert doctor.check_model(make_settings(tmp_path, model={"name": str(folder)})).status == "ok"


def test_invalid_hub_id_fails(tmp_path):
    check = doctor.check_model(make_settings(tmp_path, model={"name": "not//a valid id"}))
    assert check.status == "fail" and "nor a valid hub id" in check.message


def test_model_in_hf_cache_is_ok_without_network(tmp_path):
    cache = tmp_path / "hf"
    snapshot = cache / "models--acme--dream" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (cache / "models--acme--dream" / "refs").mkdir()
    (cache / "models--acme--dream" / "refs" / "main").write_text("0123abcd")
    settings = make_settings(tmp_path, model={"name": "acme/dream", "cache_dir": cache})
    check = doctor.check_model(settings, online=False)
    assert check.status == "ok" and "in the Hugging Face cache" in check.message


class FakeHub(BaseHTTPRequestHandler):
    """Answers ``GET /api/models/<id>`` the way huggingface.co does."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        repo = self.path.split("?")[0].removeprefix("/api/models/")
        if repo == "acme/gated":
            self._reply(403, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
        elif repo == "acme/dream":
            self._reply(200, {"id": repo, "siblings": [{"rfilename": "model_index.json"}]})
        elif repo == "acme/llm":
            self._reply(200, {"id": repo, "siblings": [{"rfilename": "config.json"}]})
        else:
            self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def online(monkeypatch):
    """These tests talk to the loopback hub even where HF_HUB_OFFLINE is set for the suite."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("name", "status", "text"),
    [
        ("acme/dream", "ok", "not downloaded yet"),
        ("acme/missing", "fail", "no model named acme/missing"),
        ("acme/gated", "fail", "gated"),
        ("acme/llm", "fail", "not a diffusers pipeline"),
    ],
)
def test_hub_model_lookup(tmp_path, hub, online, name, status, text):
    settings = make_settings(tmp_path, model={"name": name, "cache_dir": tmp_path / "hf"})
    check = doctor.check_model(settings, endpoint=hub)
    assert check.status == status and text in check.message


def test_unreachable_hub_warns_in_doctor_and_fails_at_startup(tmp_path, online):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    settings = make_settings(
        tmp_path,
        model={"name": "acme/dream", "cache_dir": tmp_path / "hf"},
        ops={"hub_timeout_s": 2},
    )
    check = doctor.check_model(settings, endpoint=dead)
    assert check.status == "warn" and "cannot be reached" in check.message
    strict = doctor.check_model(settings, endpoint=dead, strict=True)
    assert strict.status == "fail" and "connect this machine" in strict.fix
    offline = doctor.check_model(settings, online=False)
    assert offline.status == "warn" and "not in the model cache" in offline.message


def test_hf_hub_offline_mode_is_respected(tmp_path, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    settings = make_settings(tmp_path, model={"name": "acme/dream", "cache_dir": tmp_path / "hf"})
    check = doctor.check_model(settings, endpoint=hub)  # the hub would say "exists"
    assert check.status == "warn" and "offline mode" in check.message
    assert doctor.check_model(settings, endpoint=hub, strict=True).status == "fail"


# --- moderation models ----------------------------------------------------------------------


def test_watermark_self_test_and_key_file(tmp_path):
    assert doctor.check_watermark().status == "ok"
    assert "created on first start" in doctor.check_watermark(tmp_path).message
    key = tmp_path / "watermark.key"
    key.write_text("ab" * 32)
    key.chmod(0o644)
    check = doctor.check_watermark(tmp_path)
    assert check.status == "ok" and "mode 0600" in check.message
    assert key.stat().st_mode & 0o777 == 0o600
    key.write_text("not hex")
    check = doctor.check_watermark(tmp_path)
    assert check.status == "fail" and "damaged" in check.message


def test_nudenet_loads_and_broken_model_fails(tmp_path):
    check = doctor.check_nudenet(gpu=False)
    assert check.status == "ok" and "runs on the CPU (CPUExecutionProvider)" in check.message
    bad = tmp_path / "320n.onnx"
    bad.write_bytes(b"garbage")
    check = doctor.check_nudenet(bad)
    assert check.status == "fail" and "NudeNet NSFW model does not load" in check.message


def test_nudenet_on_the_cpu_beside_a_gpu_is_a_warning_with_the_fix():
    # No CUDA here: the onnxruntime build offers none, so a host whose torch sees a GPU is
    # told to install onnxruntime-gpu alone.
    check = doctor.check_nudenet(gpu=True)
    assert check.status == "warn" and "CPUExecutionProvider" in check.message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in check.fix


# --- preflight and the command --------------------------------------------------------------


def test_preflight_lists_every_blocking_problem(tmp_path):
    (tmp_path / "blocker").write_text("")
    settings = make_settings(
        tmp_path,
        discord={},
        data_dir=tmp_path / "blocker" / "data",
        model={"name": str(tmp_path / "nope.safetensors")},
        ops={"min_free_disk_mb": 10**12},
    )
    with pytest.raises(UserInputError) as info:
        doctor.preflight(settings)
    text = str(info.value)
    assert text.startswith("cannot start:")
    for part in ("no Discord bot token", "cannot write in", "MB free", "does not exist"):
        assert part in text
    assert "imagine-bot doctor" in text


def test_preflight_passes_and_creates_data_dir(tmp_path):
    settings = make_settings(tmp_path)
    doctor.preflight(settings)
    assert settings.data_dir.is_dir()


def _env_for(monkeypatch, tmp_path: Path, token: str | None) -> None:
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGINE_MODEL__NAME", "tiny")
    if token:
        monkeypatch.setenv("DISCORD_TOKEN", token)


def test_doctor_command_json_exit_codes(tmp_path, monkeypatch, capsys):
    _env_for(monkeypatch, tmp_path, None)
    assert main(["doctor", "--json", "--quick", "--offline"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    token = next(c for c in report["checks"] if c["name"] == "token")
    assert token["status"] == "fail" and token["fix"]

    _env_for(monkeypatch, tmp_path, GOOD_TOKEN)
    assert main(["doctor", "--quick", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "[warn] model" in out and "the bot can run" in out.lower()
    assert GOOD_TOKEN not in out


def test_doctor_with_missing_config_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMAGINE_CONFIG", "")  # load_settings sets it; undo that afterwards
    assert main(["--config", str(tmp_path / "missing.toml"), "doctor"]) == 2
    assert "config file" in capsys.readouterr().err


# --- metrics exposure -----------------------------------------------------------------------


def test_metrics_exposed_beyond_this_machine_warns(tmp_path):
    assert doctor.check_metrics(make_settings(tmp_path)).message.startswith("metrics endpoint off")
    local = make_settings(tmp_path, ops={"metrics_enabled": True})
    assert doctor.check_metrics(local, container=False).status == "ok"
    wide = make_settings(tmp_path, ops={"metrics_enabled": True, "metrics_host": "0.0.0.0"})
    check = doctor.check_metrics(wide, container=False)
    assert check.status == "warn" and "other machines" in check.message
    assert "127.0.0.1" in check.fix
    # Inside a container 0.0.0.0 is how Docker reaches it; compose binds the host side locally.
    assert doctor.check_metrics(wide, container=True).status == "ok"
