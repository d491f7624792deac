"""The README is the admin's manual: every setting is in its table, and CI runs its test command."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _setting_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names += [f"{name}.{inner}" for inner in sub.model_fields]
        else:
            names.append(name)
    return names


def test_every_setting_is_documented() -> None:
    table = "\n".join(line for line in README.splitlines() if line.startswith("| `"))
    missing = [name for name in _setting_names() if f"`{name}`" not in table]
    assert not missing, f"settings missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_line = [line.strip() for line in ci if "pytest" in line and not line.startswith("#")][-1]
    assert test_line in README
