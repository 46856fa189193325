"""The exception hierarchy: one root, status and exit code on every class, and the CLI
translating any PDPError a command lets through into its exit code."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from pdpctl.main import cli

from pdp import errors
from pdp.errors import PDPError

# (class, HTTP status, error code, pdpctl exit code)
HIERARCHY = [
    (errors.PDPError, 500, "internal", errors.FAILED),
    (errors.RequestError, 400, "invalid_request", errors.BAD_INPUT),
    (errors.MalformedJSONError, 400, "malformed_json", errors.BAD_INPUT),
    (errors.UnsupportedMediaError, 415, "unsupported_media_type", errors.BAD_INPUT),
    (errors.BodyTooLargeError, 413, "body_too_large", errors.BAD_INPUT),
    (errors.AuthError, 401, "unauthenticated", errors.SERVICE_ERROR),
    (errors.ForbiddenError, 403, "forbidden", errors.SERVICE_ERROR),
    (errors.UnavailableError, 503, "unavailable", errors.SERVICE_ERROR),
    (errors.EngineUnavailableError, 503, "policy_engine_unavailable", errors.SERVICE_ERROR),
    (errors.AuditUnavailableError, 503, "audit_unavailable", errors.SERVICE_ERROR),
    (errors.HistoryUnavailableError, 503, "session_history_unavailable", errors.SERVICE_ERROR),
    (errors.StoreError, 503, "store_unavailable", errors.SERVICE_ERROR),
    (errors.SidecarError, 503, "policy_engine_unavailable", errors.SERVICE_ERROR),
    (errors.ConfigError, 500, "configuration", errors.BAD_INPUT),
    (errors.TrustBundleError, 500, "configuration", errors.BAD_INPUT),
    (errors.DevTrustError, 500, "configuration", errors.BAD_INPUT),
    (errors.AuditReadError, 500, "configuration", errors.BAD_INPUT),
    (errors.ToolNotFoundError, 500, "internal", errors.TOOL_MISSING),
    (errors.BundleError, 500, "internal", errors.DOES_NOT_COMPILE),
    (errors.AuditError, 503, "audit_unavailable", errors.SERVICE_ERROR),
    (errors.RequestTimeoutError, 408, "request_timeout", errors.BAD_INPUT),
    (errors.CallerAuthError, 401, "caller_unauthenticated", errors.SERVICE_ERROR),
    (errors.OverloadedError, 503, "overloaded", errors.SERVICE_ERROR),
    (errors.InternalDecisionError, 500, "internal", errors.FAILED),
]


@pytest.mark.parametrize(("cls", "status", "code", "exit_code"), HIERARCHY, ids=lambda v: str(v))
def test_every_error_class_carries_its_status_code_and_exit_code(
    cls: type[PDPError], status: int, code: str, exit_code: int
) -> None:
    exc = cls("what went wrong")

    assert isinstance(exc, PDPError)
    assert (exc.status, exc.code, exc.exit_code) == (status, code, exit_code)
    assert exc.body() == {"allow": False, "error": {"code": code, "message": "what went wrong"}}


def test_the_hierarchy_table_names_every_error_class_of_the_module() -> None:
    defined = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, PDPError)
    }

    assert defined == {row[0] for row in HIERARCHY}


def test_errors_keep_the_builtin_bases_callers_catch() -> None:
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.TrustBundleError, ValueError)
    assert issubclass(errors.BundleError, RuntimeError)
    assert issubclass(errors.ToolNotFoundError, RuntimeError)


def test_field_errors_are_in_the_body() -> None:
    exc = errors.RequestError("bad", fields=[errors.FieldError("/tenant", "is required")])

    assert exc.body()["error"]["fields"] == [{"path": "/tenant", "message": "is required"}]


@pytest.mark.parametrize(
    ("cls", "exit_code"),
    [(errors.StoreError, 8), (errors.ConfigError, 9), (errors.BundleError, 4)],
)
def test_the_cli_exits_with_the_code_of_the_error_a_command_raises(
    cls: type[PDPError], exit_code: int
) -> None:
    @click.command("explode")
    def explode() -> None:
        raise cls("the store is down")

    cli.add_command(explode)
    try:
        result = CliRunner().invoke(cli, ["explode"])
    finally:
        cli.commands.pop("explode")

    assert result.exit_code == exit_code
    assert result.output == "error: the store is down\n"
    assert result.exception is not None and not isinstance(result.exception, PDPError)
