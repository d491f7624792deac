"""The one config object: env beats file beats defaults, and bad values explain themselves."""

from __future__ import annotations

import pytest

from core.config import CONFIG_ENV, load_settings
from core.errors import UserInputError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("IMAGINE_") or key == "DISCORD_TOKEN":
            monkeypatch.delenv(key)


def test_defaults_are_safe_and_usable() -> None:
    s = load_settings()
    assert s.model.name == "stabilityai/sd-turbo"
    assert s.ops.metrics_enabled is False
    assert s.ops.metrics_host == "127.0.0.1"
    assert s.ops.log_prompts is False
    assert s.db_path == s.data_dir / "imagine.db"


def test_toml_file_then_env_override(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "imagine.toml"
    cfg.write_text('data_dir = "/srv/imagine"\n[model]\nname = "tiny"\nmax_steps = 20\n')
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    monkeypatch.setenv("IMAGINE_MODEL__MAX_STEPS", "30")
    s = load_settings()
    assert s.model.name == "tiny"
    assert s.model.max_steps == 30  # env wins over the file
    assert str(s.data_dir) == "/srv/imagine"


def test_missing_config_file_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nope.toml"))
    with pytest.raises(UserInputError, match="does not exist"):
        load_settings()


def test_bad_value_names_the_field(monkeypatch) -> None:
    monkeypatch.setenv("IMAGINE_QUEUE__MODE", "lottery")
    with pytest.raises(UserInputError, match="queue.mode"):
        load_settings()


def test_malformed_toml_is_a_clear_error(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model\nname=")
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    with pytest.raises(UserInputError, match="invalid configuration"):
        load_settings()


def test_token_from_env_file_and_never_in_repr(tmp_path, monkeypatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    monkeypatch.setenv("IMAGINE_DISCORD__TOKEN_FILE", str(token_file))
    assert load_settings().discord_token() == "file-token-123"
    monkeypatch.setenv("DISCORD_TOKEN", "env-token-456")
    assert load_settings().discord_token() == "env-token-456"
    monkeypatch.setenv("IMAGINE_DISCORD__TOKEN", "secret-789")
    s = load_settings()
    assert s.discord_token() == "secret-789"
    assert "secret-789" not in repr(s) and "secret-789" not in str(s.model_dump())


def test_unreadable_token_file_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IMAGINE_DISCORD__TOKEN_FILE", str(tmp_path))  # a folder, not a file
    with pytest.raises(UserInputError, match="token file"):
        load_settings().discord_token()


@pytest.mark.parametrize(("cores", "threads"), [(1, 2), (2, 2), (8, 4), (16, 8), (64, 16)])
def test_postprocess_threads_default_to_half_the_cores(monkeypatch, cores, threads) -> None:
    from core import config

    monkeypatch.setattr(config, "usable_cores", lambda: cores)
    assert load_settings().queue.postprocess_threads == threads
    monkeypatch.setenv("IMAGINE_QUEUE__POSTPROCESS_THREADS", "3")
    assert load_settings().queue.postprocess_threads == 3  # an admin's choice wins
