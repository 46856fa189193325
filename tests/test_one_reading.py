"""One reading of every request (issue 8, samples 1-3): what two parsers could read
differently is refused with an exact 400, never decided; policy sees canonical URLs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.boundary_helpers import (
    DECISIONS,
    allow_request,
    decision_records,
    json_error,
    schema_error,
)
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ALLOW_EXAMPLE,
    Client,
    Factory,
    admin,
    decide,
    introspect,
    make_pdp_fixture,
    pdp_fixture,
)

BACKSLASH = "backslashes, spaces and control characters are not allowed"


def with_url(token: str, url: str) -> dict[str, Any]:
    request = allow_request(token)
    request["destination"] = {**request["destination"], "url": url}
    return request


# --------------------------------------------------------------------------- sample 1


async def test_sample_1_url_with_backslash_userinfo_is_refused_not_allowed(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    request = with_url(
        mint(ALLOW_EXAMPLE["spiffe_id"]), "https://attacker.example\\@jira.internal.acme/rest"
    )

    resp = await pdp.post(DECISIONS, json=request)

    assert (resp.status, await resp.json()) == (400, schema_error("/destination/url", BACKSLASH))
    assert decision_records(tmp_path / "state" / "audit") == []  # nothing decided or minted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://jira.internal.acme\\.attacker.example/rest", BACKSLASH),
        ("https://jira.internal.acme@attacker.example/rest", "userinfo (user@host) is not allowed"),
        ("https://attacker.example#@jira.internal.acme/rest", None),  # fragment: host is attacker
        ("https://jira.internal.acme\t.attacker.example/",
         "has characters or a form that is not allowed here"),  # the schema's pattern
        ("https://jira.internal.acme%2eattacker.example/",
         "percent-encoding is not allowed in the host"),
        ("https://ｊira.internal.acme/rest",
         "has characters that Unicode (NFKC) normalisation changes"),
        ("https:///jira.internal.acme/rest", "has no host"),
        ("https://[jira.internal.acme]/rest", "the brackets do not hold a valid IPv6 address"),
        ("https://0x7f.1/rest", "the host looks like an IPv4 address but is not one"),
    ],
)  # fmt: skip
async def test_a_url_read_two_ways_never_gets_a_credential_for_the_wrong_host(
    pdp: Client, mint: Callable[..., str], url: str, message: str | None
) -> None:
    resp = await pdp.post(DECISIONS, json=with_url(mint(ALLOW_EXAMPLE["spiffe_id"]), url))
    body = await resp.json()

    if message is None:  # one reading, of the wrong host: a deny, no credential
        assert (resp.status, body["allow"], "credential" in body) == (200, False, False)
        assert "destination_host_mismatch" in [r["code"] for r in body["reasons"]]
    else:
        assert (resp.status, body) == (400, schema_error("/destination/url", message))


@pytest.mark.parametrize(
    ("url", "allow", "codes"),
    [
        ("https://JIRA.Internal.ACME./rest/api/2/search", True, []),
        ("https://jira.internal.acme:443/rest", True, []),
        ("http://jira.internal.acme/rest",
         False, ["destination_port_not_registered", "destination_scheme_not_allowed"]),
        ("https://jira.internal.acme:8443/rest", False, ["destination_port_not_registered"]),
        ("wss://jira.internal.acme/rest", False, ["destination_scheme_not_allowed"]),
    ],
)  # fmt: skip
async def test_policy_sees_the_canonical_url_and_denies_other_schemes_and_ports(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, url: str, allow: bool, codes: list[str]
) -> None:
    resp = await pdp.post(DECISIONS, json=with_url(mint(ALLOW_EXAMPLE["spiffe_id"]), url))
    body = await resp.json()

    assert (resp.status, body["allow"], sorted(r["code"] for r in body["reasons"])) == (
        200,
        allow,
        codes,
    )
    [record] = decision_records(tmp_path / "state" / "audit")
    dest = record["input"]["destination"]
    assert dest["host"] == "jira.internal.acme"
    assert dest["url"].startswith(f"{dest['scheme']}://jira.internal.acme/") or dest[
        "url"
    ].startswith(f"{dest['scheme']}://jira.internal.acme:{dest['port']}/")


# --------------------------------------------------------------------------- sample 2


def duplicated(token: str, inner: str) -> bytes:
    """The allow request as JSON text with ``inner`` spliced into its destination."""
    request = allow_request(token)
    text = json.dumps(request)
    head = '"destination": {'
    return text.replace(head, head + inner, 1).encode()


async def test_sample_2_duplicate_url_members_are_refused(
    pdp: Client, mint: Callable[..., str]
) -> None:
    data = duplicated(mint(ALLOW_EXAMPLE["spiffe_id"]), '"url": "https://attacker.example/x", ')

    resp = await pdp.post(DECISIONS, data=data, headers={"Content-Type": "application/json"})

    assert (resp.status, await resp.json()) == (
        400,
        json_error("/destination/url", "member appears more than once"),
    )


async def test_sample_2_duplicate_tenant_is_refused(pdp: Client, mint: Callable[..., str]) -> None:
    text = json.dumps(allow_request(mint(ALLOW_EXAMPLE["spiffe_id"])))
    data = ('{"tenant": "globex", ' + text[1:]).encode()  # a second top-level tenant

    resp = await pdp.post(DECISIONS, data=data, headers={"Content-Type": "application/json"})

    assert (resp.status, await resp.json()) == (
        400,
        json_error("/tenant", "member appears more than once"),
    )


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('"arguments": {', '"jql": "x", ', "/action/arguments/jql"),
        ('"action": {', '"type": "data.export", ', "/action/type"),
        ('"agent": {', '"token": "x", ', "/agent/token"),
        ('"data": {', '"sensitivity": "public", ', "/data/sensitivity"),
    ],
)
async def test_duplicates_are_refused_at_any_depth(
    pdp: Client, mint: Callable[..., str], old: str, new: str, path: str
) -> None:
    text = json.dumps(allow_request(mint(ALLOW_EXAMPLE["spiffe_id"])))
    assert old in text
    data = text.replace(old, old + new, 1).encode()

    resp = await pdp.post(DECISIONS, data=data, headers={"Content-Type": "application/json"})

    assert (resp.status, await resp.json()) == (
        400,
        json_error(path, "member appears more than once"),
    )


async def test_duplicate_members_are_refused_on_admin_endpoints_too(pdp: Client) -> None:
    data = (
        b'{"spiffe_id": "spiffe://acme.example/agents/a", '
        b'"spiffe_id": "spiffe://acme.example/agents/b", "reason": "r"}'
    )

    resp = await pdp.post(
        "/v1/agents/disable", data=data, headers={**admin(), "Content-Type": "application/json"}
    )

    assert (resp.status, await resp.json()) == (
        400,
        json_error("/spiffe_id", "member appears more than once"),
    )


# --------------------------------------------------------------------------- sample 3

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_sample_3_a_revoke_with_two_tokens_is_refused_and_revokes_nothing(
    pdp: Client, mint: Callable[..., str]
) -> None:
    live = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]

    resp = await pdp.post(
        "/v1/credentials/revoke",
        data=f"token={live}&token=junk".encode(),
        headers={**admin(), **FORM},
    )

    assert (resp.status, await resp.json()) == (
        400,
        schema_error("/token", "must appear at most once"),
    )
    assert (await introspect(pdp, live))["active"] is True
    # ...and the one-token revoke does revoke it
    resp = await pdp.post(
        "/v1/credentials/revoke", data=f"token={live}".encode(), headers={**admin(), **FORM}
    )
    assert (resp.status, await resp.json()) == (200, {"revoked": True})
    assert (await introspect(pdp, live))["active"] is False


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/credentials/introspect", b"token=a&token=b",
         schema_error("/token", "must appear at most once")),
        ("/v1/credentials/introspect", b"token=a&token_type_hint=x&token_type_hint=y",
         schema_error("/token_type_hint", "must appear at most once")),
        ("/v1/credentials/revoke", b"token=junk&token=",
         schema_error("/token", "must appear at most once")),
        ("/v1/credentials/revoke", b"tok%65n=a&token=b",  # the same name, percent-encoded
         schema_error("/token", "must appear at most once")),
        ("/v1/credentials/revoke", b"token=%ff%fe",
         schema_error("/", "is not UTF-8 after percent-decoding")),
        ("/v1/credentials/revoke", b"token=a%00b",
         schema_error("/token", "must not contain control characters")),
    ],
)  # fmt: skip
async def test_form_bodies_have_one_reading(
    pdp: Client, path: str, body: bytes, expected: dict[str, Any]
) -> None:
    resp = await pdp.post(path, data=body, headers={**admin(), **FORM})

    assert (resp.status, await resp.json()) == (400, expected)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/json; charset=no-such-charset",
    ],
)
async def test_json_in_another_charset_is_refused(
    pdp: Client, mint: Callable[..., str], content_type: str
) -> None:
    data = json.dumps(allow_request(mint(ALLOW_EXAMPLE["spiffe_id"]))).encode()

    resp = await pdp.post(DECISIONS, data=data, headers={"Content-Type": content_type})
    body = await resp.json()

    charset = content_type.split("=", 1)[1]
    assert (resp.status, body) == (
        415,
        {
            "allow": False,
            "error": {
                "code": "unsupported_media_type",
                "message": f"a JSON body must be UTF-8 (charset={charset!r} is not)",
            },
        },
    )


async def test_a_header_the_pdp_reads_sent_twice_is_refused(pdp: Client) -> None:
    # aiohttp refuses a repeated Content-Type or Host itself; a repeated Authorization is
    # ours to refuse: the admin token and anything else is not "the admin token".
    from multidict import CIMultiDict

    for second in (admin()["Authorization"], "Bearer junk"):
        headers = CIMultiDict(
            [
                ("Authorization", admin()["Authorization"]),
                ("Authorization", second),
                ("Content-Type", "application/json"),
            ]
        )
        resp = await pdp.post(
            "/v1/agents/disable", data=b'{"spiffe_id": "spiffe://acme.example/agents/x"}',
            headers=headers,
        )  # fmt: skip
        body = await resp.json()
        assert resp.status == 400, body
        assert "sent more than once" in body["error"]["message"]
