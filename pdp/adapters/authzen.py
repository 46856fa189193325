"""The OpenID AuthZEN Authorization API 1.0 front door (docs/authzen.md).

    POST /access/v1/evaluation            one decision
    POST /access/v1/evaluations           several, defaults inherited, answers in order
    POST /access/v1/search/subject        which subjects may ...
    POST /access/v1/search/resource       which resources may ...
    POST /access/v1/search/action         which actions may ...
    GET  /.well-known/authzen-configuration

Every evaluation is one call of :meth:`DecisionService.decide`. A subject of type
``agent`` or ``workload`` is agent traffic: ``subject.properties.token`` is its JWT-SVID,
verified like ``agent.token`` of the JSON API, and the tuple is mapped onto a decision
request (:func:`agent_request`). Any other subject is *asserted by the PEP*: the tuple
reaches policy as sent (:func:`pdp.normalize.is_asserted`).

Errors follow the spec: 400 (or 413/415) for a malformed payload, 503 when the policy
engine cannot answer; the body is an error message string. ``X-Request-ID`` is echoed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..callers import ANONYMOUS, Caller, request_caller
from ..decision import DecisionService
from ..errors import (
    EngineUnavailableError,
    FieldError,
    MalformedJSONError,
    PDPError,
    RequestError,
)
from ..httpio import header, json_response, read_json_body
from ..schema import validate_def, validate_request
from ..state import DECISIONS, SETTINGS

#: Subject types whose ``properties.token`` is an agent's JWT-SVID.
AGENT_SUBJECT_TYPES = frozenset({"agent", "workload"})
#: Where a policy directory lists search candidates (data.authzen.search).
SEARCH_DATA_PATH = "authzen/search"
#: Most candidates one search considers, and most results per page.
MAX_SEARCH_CANDIDATES = 1000
MAX_PAGE_LIMIT = 100
#: Longest X-Request-ID accepted (echoed back as is).
MAX_REQUEST_ID = 256
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")

ENDPOINTS = {
    "access_evaluation_endpoint": "/access/v1/evaluation",
    "access_evaluations_endpoint": "/access/v1/evaluations",
    "search_subject_endpoint": "/access/v1/search/subject",
    "search_resource_endpoint": "/access/v1/search/resource",
    "search_action_endpoint": "/access/v1/search/action",
}

_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def add_routes(app: web.Application) -> None:
    """Register the AuthZEN routes (the decision service is read from :mod:`pdp.state`)."""
    app.router.add_post(ENDPOINTS["access_evaluation_endpoint"], post_evaluation)
    app.router.add_post(ENDPOINTS["access_evaluations_endpoint"], post_evaluations)
    for kind in ("subject", "resource", "action"):
        app.router.add_post(ENDPOINTS[f"search_{kind}_endpoint"], _search_handler(kind))
    app.router.add_get("/.well-known/authzen-configuration", get_configuration)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    """What the PEP asked for in ``options.agent_pdp``."""

    #: decision_id and reasons in every answer's context (not only agent denials).
    explain: bool = False
    #: the credential minted on allow, in the answer's context.
    credential: bool = False

    @classmethod
    def of(cls, body: dict[str, Any]) -> Options:
        own = (body.get("options") or {}).get("agent_pdp") or {}
        return cls(explain=own.get("explain") is True, credential=own.get("credential") is True)


# --------------------------------------------------------------------------- handlers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id(request: web.Request) -> str | None:
    """The one X-Request-ID (visible ASCII, sent once: :func:`pdp.httpio.header`)."""
    rid = header(request, "X-Request-ID")
    if rid is not None and not 0 < len(rid) <= MAX_REQUEST_ID:
        raise RequestError(f"X-Request-ID must be 1..{MAX_REQUEST_ID} characters")
    return rid


def _answer(request: web.Request, body: Any, status: int = 200) -> web.Response:
    """The answer, echoing X-Request-ID only when it has one reading (else, it is the
    400 being answered)."""
    response = json_response(body, status)
    try:
        rid = _request_id(request)
    except RequestError:
        rid = None
    if rid is not None:
        response.headers["X-Request-ID"] = rid
    return response


def _error_message(exc: PDPError) -> str:
    """The spec's error body: one message string (field paths, never values)."""
    if not exc.fields:
        return exc.message
    return exc.message + ": " + "; ".join(f"{f.path} {f.message}" for f in exc.fields)


def _spec_errors(handler: Handler) -> Handler:
    """Answer errors as the spec does (status + message string) and echo X-Request-ID."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PDPError as exc:
            return _answer(request, _error_message(exc), exc.status)

    wrapped.__doc__ = handler.__doc__
    return wrapped


async def _body(request: web.Request, definition: str) -> dict[str, Any]:
    body = await read_json_body(request, request.app[SETTINGS].max_body_bytes)
    if not isinstance(body, dict):
        raise MalformedJSONError("body must be a JSON object")
    return validate_def("authzen", definition, body)


def _service(request: web.Request) -> DecisionService:
    return request.app[DECISIONS]


@_spec_errors
async def post_evaluation(request: web.Request) -> web.StreamResponse:
    """POST /access/v1/evaluation: one decision."""
    rid = _request_id(request)
    body = await _body(request, "evaluation")
    decision = await evaluate(_service(request), body, Options.of(body), rid, _caller(request))
    return _answer(request, decision)


@_spec_errors
async def post_evaluations(request: web.Request) -> web.StreamResponse:
    """POST /access/v1/evaluations: several decisions, in request order."""
    rid = _request_id(request)
    body = await _body(request, "evaluations")
    service, options = _service(request), Options.of(body)
    items = body.get("evaluations") or []
    if not items:  # no (or an empty) array: the single-evaluation request, answered as one
        validate_def("authzen", "evaluation", body)
        return _answer(request, await evaluate(service, body, options, rid, _caller(request)))
    defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
    tuples = [{**defaults, **item} for item in items]
    missing = [
        FieldError(f"/evaluations/{i}/{key}", "is required (no top-level default)")
        for i, t in enumerate(tuples)
        for key in ("subject", "action", "resource")
        if key not in t
    ]
    if missing:
        raise RequestError("request does not match the schema", fields=missing[:20])
    semantic = (body.get("options") or {}).get("evaluations_semantic", "execute_all")
    answers: list[dict[str, Any]] = []
    caller = _caller(request)
    async with service.admit():  # one request, one evaluation slot (pdp.decision)
        if semantic == "execute_all":
            answers = list(
                await asyncio.gather(
                    *(_evaluate_item(service, t, options, rid, caller) for t in tuples)
                )
            )
        else:
            stop_on = semantic == "permit_on_first_permit"
            for t in tuples:
                answers.append(await _evaluate_item(service, t, options, rid, caller))
                if answers[-1]["decision"] is stop_on:
                    break
    return _answer(request, {"evaluations": answers})


@_spec_errors
async def get_configuration(request: web.Request) -> web.StreamResponse:
    """GET /.well-known/authzen-configuration: the PDP metadata (served endpoints only)."""
    host = header(request, "Host") or request.host  # visible ASCII, sent once, else 400
    base = f"{request.scheme}://{host}"
    body: dict[str, Any] = {"policy_decision_point": base}
    body.update({key: base + path for key, path in ENDPOINTS.items()})
    return _answer(request, body)


# --------------------------------------------------------------------------- evaluation


def is_agent(subject: dict[str, Any]) -> bool:
    """True when the subject is agent traffic (authenticated by its JWT-SVID)."""
    return subject.get("type") in AGENT_SUBJECT_TYPES


def _caller(request: web.Request) -> Caller:
    return request_caller(request)


async def evaluate(
    service: DecisionService,
    tup: dict[str, Any],
    options: Options,
    request_id: str | None,
    caller: Caller = ANONYMOUS,
    *,
    admitted: bool = False,
) -> dict[str, Any]:
    """Decide one subject/action/resource/context tuple; answer an AuthZEN Decision.

    Raises :class:`RequestError` when an agent tuple does not map onto a valid decision
    request, :class:`EngineUnavailableError` when the engine cannot answer.
    """
    agent = is_agent(tup["subject"])
    if agent:
        decision_request = agent_request(service, tup, request_id)
        want_credential = options.credential
    else:
        decision_request = asserted_request(tup, request_id)
        want_credential = False
    response = await service.decide(
        decision_request, mint=want_credential, caller=caller, admitted=admitted
    )
    return to_decision(response, agent=agent, options=options)


async def _evaluate_item(
    service: DecisionService,
    tup: dict[str, Any],
    options: Options,
    request_id: str | None,
    caller: Caller,
) -> dict[str, Any]:
    """One item of an evaluations request: its errors are its own (decision false)."""
    try:
        return await evaluate(service, tup, options, request_id, caller, admitted=True)
    except RequestError as exc:
        return {"decision": False, "context": _error_context(exc)}
    except EngineUnavailableError as exc:
        context = _error_context(exc)
        if exc.decision_id is not None:
            context["decision_id"] = exc.decision_id
        return {"decision": False, "context": context}


def _error_context(exc: PDPError) -> dict[str, Any]:
    return {"error": {"status": exc.status, "message": _error_message(exc)}}


def to_decision(response: dict[str, Any], *, agent: bool, options: Options) -> dict[str, Any]:
    """The AuthZEN Decision of a decision response.

    ``context`` carries decision_id and reasons when the PEP asked (``explain``) or when
    an agent is denied; the approval object when the policy asks for one; the minted
    credential when the PEP asked for it and the decision allowed.
    """
    allow = response["allow"] is True
    out: dict[str, Any] = {"decision": allow}
    context: dict[str, Any] = {}
    approval = response.get("approval")
    if options.explain or (agent and not allow) or approval is not None:
        context["decision_id"] = response["decision_id"]
        context["reasons"] = response.get("reasons", [])
    if approval is not None:
        context["approval"] = approval
    if allow and options.credential and "credential" in response:
        context["decision_id"] = response["decision_id"]
        context["credential"] = response["credential"]
    if context:
        out["context"] = context
    return out


def asserted_request(tup: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """The decision request of a PEP-asserted subject: the tuple itself.

    A ``token`` property is dropped: only agent subjects are authenticated by one, and a
    token must never reach policy input or the audit record.
    """
    subject = dict(tup["subject"])
    props = subject.get("properties")
    if isinstance(props, dict) and "token" in props:
        subject["properties"] = {k: v for k, v in props.items() if k != "token"}
    request: dict[str, Any] = {
        "subject": subject,
        "action": tup["action"],
        "resource": tup["resource"],
        "context": tup.get("context") or {},
    }
    if request_id is not None and _ID_PATTERN.match(request_id):
        request["request_id"] = request_id
    return request


#: decision request pointer prefix -> AuthZEN pointer prefix (for error messages).
_POINTERS = (
    ("/agent/token", "/subject/properties/token"),
    ("/agent/on_behalf_of", "/subject/properties/on_behalf_of"),
    ("/agent", "/subject/properties"),
    ("/tenant", "/context/tenant"),
    ("/task", "/context/task"),
    ("/prompt", "/context/prompt"),
    ("/approval_id", "/context/approval_id"),
    ("/action/type", "/action/properties/type"),
    ("/action/operation", "/action/properties/operation"),
    ("/action/arguments", "/action/properties/arguments"),
    ("/destination/type", "/resource/type"),
    ("/destination/name", "/resource/id"),
    ("/destination/url", "/resource/properties/url"),
    ("/destination/environment", "/resource/properties/environment"),
    ("/destination", "/resource"),
    ("/data/sensitivity", "/resource/properties/sensitivity"),
    ("/data/categories", "/resource/properties/categories"),
    ("/data", "/resource/properties"),
)


def _authzen_pointer(path: str) -> str:
    for ours, theirs in _POINTERS:
        if path == ours or path.startswith(ours + "/"):
            return theirs + path[len(ours) :]
    return path


def agent_request(
    service: DecisionService, tup: dict[str, Any], request_id: str | None
) -> dict[str, Any]:
    """Map an agent tuple onto a decision request (docs/authzen.md#agent-traffic).

    subject.properties.token -> agent.token; .on_behalf_of -> agent.on_behalf_of;
    action.name -> action.name, action.properties.{type, operation, arguments};
    resource.type/id -> destination.type/name, resource.properties.{url, environment};
    resource.properties.{sensitivity, categories} -> data; context.{tenant, task, prompt,
    approval_id} -> the request's; the rest of context -> context.

    ``subject.id``, when the token verifies, must be the token's SPIFFE ID: the acting
    agent comes from the token, and two readings of who acts are refused.
    """
    subject, action, resource = tup["subject"], tup["action"], tup["resource"]
    sprops = subject.get("properties") or {}
    aprops = action.get("properties") or {}
    rprops = resource.get("properties") or {}
    context = dict(tup.get("context") or {})
    req: dict[str, Any] = {}
    if request_id is not None and _ID_PATTERN.match(request_id):
        req["request_id"] = request_id
    req["agent"] = {k: sprops[k] for k in ("token", "on_behalf_of") if k in sprops}
    for key in ("tenant", "task", "prompt", "approval_id"):
        if key in context:
            req[key] = context.pop(key)
    req["action"] = {"name": action["name"]}
    req["action"].update({k: aprops[k] for k in ("type", "operation", "arguments") if k in aprops})
    req["destination"] = {"type": resource["type"], "name": resource["id"]}
    req["destination"].update({k: rprops[k] for k in ("url", "environment") if k in rprops})
    data = {k: rprops[k] for k in ("sensitivity", "categories") if k in rprops}
    if data:
        req["data"] = data
    if context:
        req["context"] = context
    try:
        validate_request(req)
    except RequestError as exc:
        fields = [FieldError(_authzen_pointer(f.path), f.message) for f in exc.fields]
        raise RequestError("agent request does not map onto a decision", fields=fields) from None
    token = req["agent"].get("token")
    identity = service.verifier.verify(token) if isinstance(token, str) else None
    if identity is not None and identity.authenticated and identity.spiffe_id != subject["id"]:
        raise RequestError(
            "agent request does not map onto a decision",
            fields=[FieldError("/subject/id", "must be the SPIFFE ID the token was issued to")],
        )
    return req


# --------------------------------------------------------------------------- search

_SEARCH_KEYS = {"subject": "subjects", "resource": "resources", "action": "actions"}


def _search_handler(kind: str) -> Handler:
    @_spec_errors
    async def post_search(request: web.Request) -> web.StreamResponse:
        rid = _request_id(request)
        body = await _body(request, f"search_{kind}")
        service = _service(request)
        async with service.admit():  # one request, one evaluation slot (pdp.decision)
            result = await search(service, kind, body, Options.of(body), rid, _caller(request))
        return _answer(request, result)

    post_search.__doc__ = f"POST /access/v1/search/{kind}: the {kind}s that would be allowed."
    return post_search


def _fingerprint(body: dict[str, Any]) -> str:
    """What a page token is bound to: the request without the token itself."""
    page = {k: v for k, v in (body.get("page") or {}).items() if k != "token"}
    doc = {**body, "page": page}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _encode_token(cursor: int, fingerprint: str) -> str:
    raw = orjson.dumps({"c": cursor, "f": fingerprint})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> int:
    bad = RequestError(
        "page token is not valid for this request",
        fields=[FieldError("/page/token", "is not a token this PDP issued for this request")],
    )
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("f") != fingerprint:
        raise bad
    cursor = doc.get("c")
    if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
        raise bad
    return cursor


async def candidates(service: DecisionService, kind: str, entity_type: str) -> list[str]:
    """The ids (names, for actions) a search considers: ``data.authzen.search.<kind>s``
    keyed by the searched type (the resource type for actions). None defined: none."""
    path = f"{SEARCH_DATA_PATH}/{_SEARCH_KEYS[kind]}"
    doc = await service.opa.data(path)
    if not isinstance(doc, dict):
        return []
    found = doc.get(entity_type)
    if not isinstance(found, list):
        return []
    return [str(c) for c in found if isinstance(c, str | int)][:MAX_SEARCH_CANDIDATES]


def _candidate_tuple(kind: str, body: dict[str, Any], candidate: str) -> dict[str, Any]:
    tup: dict[str, Any] = {
        k: body[k] for k in ("subject", "action", "resource", "context") if k in body
    }
    if kind == "action":
        tup["action"] = {"name": candidate}
    else:
        searched = {k: v for k, v in body[kind].items() if k != "id"}
        tup[kind] = {**searched, "id": candidate}
    return tup


def _result(kind: str, body: dict[str, Any], candidate: str) -> dict[str, Any]:
    if kind == "action":
        return {"name": candidate}
    return {"type": body[kind]["type"], "id": candidate}


async def search(
    service: DecisionService,
    kind: str,
    body: dict[str, Any],
    options: Options,
    request_id: str | None,
    caller: Caller = ANONYMOUS,
) -> dict[str, Any]:
    """Evaluate each candidate through the decision path; answer the allowed ones.

    Pagination: at most ``page.limit`` (default and cap MAX_PAGE_LIMIT) results; a
    response that is not the whole rest of the set carries ``page.next_token``, an opaque
    cursor bound to this request (a changed request with an old token is a 400). The
    ``page`` object is answered when the request had one or when more results follow.
    """
    page = body.get("page")
    fingerprint = _fingerprint(body)
    cursor = _decode_token(page["token"], fingerprint) if page and page.get("token") else 0
    limit = min((page or {}).get("limit", MAX_PAGE_LIMIT), MAX_PAGE_LIMIT)
    searched_type = body["resource"]["type"] if kind == "action" else body[kind]["type"]
    pool = await candidates(service, kind, searched_type)
    results: list[dict[str, Any]] = []
    index = cursor
    while index < len(pool) and len(results) < limit:
        batch = pool[index : index + max(limit - len(results), 1)]
        decisions = await asyncio.gather(
            *(
                evaluate(
                    service,
                    _candidate_tuple(kind, body, c),
                    options,
                    request_id,
                    caller,
                    admitted=True,
                )  # fmt: skip
                for c in batch
            )
        )
        for candidate, decision in zip(batch, decisions, strict=True):
            index += 1
            if decision["decision"] is True:
                results.append(_result(kind, body, candidate))
                if len(results) == limit:
                    break
    more = index < len(pool)
    answer: dict[str, Any] = {}
    if page is not None or more:
        answer["page"] = {
            "next_token": _encode_token(index, fingerprint) if more else "",
            "count": len(results),
        }
    answer["results"] = results
    return answer
