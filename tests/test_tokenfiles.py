"""pdp.credentials.tokenfiles: where the admin, introspection and approver credentials come
from (the setting, a file it names, or the generated STATE_DIR/admin-token), their length floor,
and that no credential ever reaches the log."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdp.config import Settings
from pdp.credentials.tokenfiles import (
    ADMIN_TOKEN_FILE,
    approver_token,
    introspection_token,
    read_secret,
    resolve_admin_token,
)
from pdp.errors import ConfigError

SECRET = "a-credential-of-32-characters-xx"
OTHER = "another-credential-from-a-file-0"


def secret_file(tmp_path: Path, content: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# --------------------------------------------------------------------------- read_secret


def test_a_secret_file_is_read_without_surrounding_whitespace(tmp_path: Path) -> None:
    assert read_secret(secret_file(tmp_path, f"  {SECRET}\n\n")) == SECRET


def test_sixteen_characters_are_enough_fifteen_are_not(tmp_path: Path) -> None:
    assert read_secret(secret_file(tmp_path, "x" * 16 + "\n")) == "x" * 16
    short = secret_file(tmp_path, "x" * 15 + "\n", "short")
    with pytest.raises(ConfigError) as caught:
        read_secret(short)
    assert str(caught.value) == (f"the credential in {str(short)!r} is shorter than 16 characters")
    assert "x" * 15 not in str(caught.value)


def test_an_unreadable_secret_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as caught:
        read_secret(missing)
    assert str(caught.value).startswith(f"cannot read the credential file {str(missing)!r}: ")
    assert "No such file" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --------------------------------------------------------------------------- admin token


def test_the_admin_setting_wins_over_any_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdp.credentials")
    settings = Settings(
        state_dir=tmp_path / "state",
        admin_token=SECRET,
        admin_token_file=secret_file(tmp_path, OTHER),
    )
    assert resolve_admin_token(settings) == SECRET
    assert not (tmp_path / "state").exists()  # nothing generated
    assert [r.getMessage() for r in caplog.records] == [
        "admin API credential: from PDP_ADMIN_TOKEN"
    ]


def test_the_admin_file_is_read_when_no_setting_is_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdp.credentials")
    path = secret_file(tmp_path, OTHER + "\n")
    settings = Settings(state_dir=tmp_path / "state", admin_token_file=path)
    assert resolve_admin_token(settings) == OTHER
    assert not (tmp_path / "state" / ADMIN_TOKEN_FILE).exists()
    assert [r.getMessage() for r in caplog.records] == [f"admin API credential: from {path}"]
    assert OTHER not in caplog.text


def test_a_short_admin_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, admin_token_file=secret_file(tmp_path, "short"))
    with pytest.raises(ConfigError, match="shorter than 16"):
        resolve_admin_token(settings)


def test_without_setting_or_file_a_private_admin_token_is_generated_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdp.credentials")
    state = tmp_path / "state" / "nested"
    settings = Settings(state_dir=state)
    token = resolve_admin_token(settings)
    path = state / ADMIN_TOKEN_FILE
    assert ADMIN_TOKEN_FILE == "admin-token"
    assert path.read_text() == token + "\n"
    assert len(token) >= 43  # 32 random bytes, base64url
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [r.getMessage() for r in caplog.records] == [
        f"generated an admin API credential into {path} (mode 0600)",
        f"admin API credential: from {path}",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert token not in caplog.text
    caplog.clear()
    assert resolve_admin_token(settings) == token  # read back, not generated again
    assert [r.getMessage() for r in caplog.records] == [f"admin API credential: from {path}"]


def test_an_existing_state_admin_token_is_used_as_written(tmp_path: Path) -> None:
    (tmp_path / ADMIN_TOKEN_FILE).write_text(f"{SECRET}\n")
    assert resolve_admin_token(Settings(state_dir=tmp_path)) == SECRET


def test_every_generated_admin_token_is_different(tmp_path: Path) -> None:
    first = resolve_admin_token(Settings(state_dir=tmp_path / "a"))
    second = resolve_admin_token(Settings(state_dir=tmp_path / "b"))
    assert first != second


# ------------------------------------------------------------------ introspection, approvers


@pytest.mark.parametrize(
    ("getter", "setting", "file_setting"),
    [
        (introspection_token, "introspection_token", "introspection_token_file"),
        (approver_token, "approver_token", "approver_token_file"),
    ],
)
def test_the_optional_credentials_come_from_the_setting_then_the_file_else_none(
    tmp_path: Path, getter: Callable[[Settings], str | None], setting: str, file_setting: str
) -> None:
    def settings(**values: Any) -> Settings:
        return Settings(state_dir=tmp_path, **values)

    path = secret_file(tmp_path, f"{OTHER}\n")
    assert getter(settings()) is None
    assert getter(settings(**{file_setting: path})) == OTHER
    assert getter(settings(**{setting: SECRET})) == SECRET
    assert getter(settings(**{setting: SECRET, file_setting: path})) == SECRET
    short = secret_file(tmp_path, "short", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        getter(settings(**{file_setting: short}))
    assert not (tmp_path / ADMIN_TOKEN_FILE).exists()
