"""The admin API client the `keys`, `credentials` and `agents` commands share.

Where the admin credential comes from, first match wins: ``--admin-token`` /
``PDP_ADMIN_TOKEN``; the file ``--admin-token-file`` / ``PDP_ADMIN_TOKEN_FILE``; the
running service's generated ``STATE_DIR/admin-token`` (``--state-dir`` / ``PDP_STATE_DIR``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import BAD_INPUT, FAILED, SERVICE_ERROR, CLIError

DEFAULT_URL = "http://127.0.0.1:8700"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AdminClient:
    """Base URL plus the admin credential."""

    url: str
    token: str

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; return the JSON answer or raise CLIError (exit 8)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    error = json.loads(exc.read()).get("error", {})
                except ValueError:
                    error = {}
            message = error.get("message") or exc.reason
            fields = "; ".join(f"{f['path']}: {f['message']}" for f in error.get("fields", []))
            detail = f" ({fields})" if fields else ""
            raise CLIError(f"HTTP {exc.code}: {message}{detail}", SERVICE_ERROR) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CLIError(
                f"{self.url}: cannot reach the service ({reason})", SERVICE_ERROR
            ) from None


def resolve_token(token: str | None, token_file: Path | None, state_dir: Path) -> str:
    if token:
        return token
    path = token_file or state_dir / "admin-token"
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise CLIError(
            f"no admin credential: give --admin-token or PDP_ADMIN_TOKEN, or make {str(path)!r} "
            f"readable ({exc.strerror or exc})",
            BAD_INPUT,
        ) from None
    if not value:
        raise CLIError(f"the admin credential file {str(path)!r} is empty", BAD_INPUT)
    return value


def admin_options(f: F) -> F:
    """The options every admin command takes; passes ``client: AdminClient``."""

    @click.option(
        "--url", default=DEFAULT_URL, envvar="PDP_URL", show_envvar=True, show_default=True
    )
    @click.option(
        "--admin-token",
        envvar="PDP_ADMIN_TOKEN",
        show_envvar=True,
        help="Admin API credential (default: the token file).",
    )
    @click.option(
        "--admin-token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="PDP_ADMIN_TOKEN_FILE",
        show_envvar=True,
        help="File holding the admin credential [STATE_DIR/admin-token].",
    )
    @click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".pdp-state"),
        envvar="PDP_STATE_DIR",
        show_envvar=True,
        show_default=True,
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
    def wrapper(
        url: str,
        admin_token: str | None,
        admin_token_file: Path | None,
        state_dir: Path,
        as_json: bool,
        **kwargs: Any,
    ) -> Any:
        client = AdminClient(url, resolve_token(admin_token, admin_token_file, state_dir))
        return f(client=client, as_json=as_json, **kwargs)

    wrapper.__doc__ = f.__doc__
    wrapper.__name__ = f.__name__
    return wrapper  # type: ignore[return-value]


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


def fail(message: str) -> CLIError:
    return CLIError(message, FAILED)


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
