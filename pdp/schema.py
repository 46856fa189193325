"""The JSON Schemas in pdp/schemas/ and request validation with precise, value-free errors.

The schema files are the single source of truth for the request, the OPA input and the
decision document; validators are compiled once and cached.

Two validators share each schema: ``jsonschema-rs`` answers "valid?" on the hot path (a few
microseconds), and ``jsonschema`` explains a rejection field by field (the cold path).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .errors import FieldError, RequestError

#: Cap on the field errors reported for one request.
MAX_FIELD_ERRORS = 20


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``pdp/schemas/<name>.schema.json``."""
    text = resources.files("pdp").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def fast_validator(name: str) -> Any:
    """The compiled jsonschema-rs validator of a schema (``.is_valid(doc)``)."""
    _validator(name)  # the schema itself must be valid Draft 2020-12
    return jsonschema_rs.validator_for(load_schema(name))


def _def_schema(name: str, definition: str | None) -> dict[str, Any]:
    schema = load_schema(name)
    if definition is None:
        return schema
    return {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}


@functools.cache
def _def_validator(name: str, definition: str | None) -> Draft202012Validator:
    schema = _def_schema(name, definition)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def _fast_def_validator(name: str, definition: str | None) -> Any:
    _def_validator(name, definition)  # the schema itself must be valid Draft 2020-12
    return jsonschema_rs.validator_for(_def_schema(name, definition))


def validate_def(name: str, definition: str | None, body: Any) -> dict[str, Any]:
    """Return ``body`` if it matches ``$defs/<definition>`` of schema ``name`` (the whole
    schema when ``definition`` is None), else raise :class:`RequestError` naming the
    fields (never their values). Fast path jsonschema-rs, field errors from jsonschema."""
    if _fast_def_validator(name, definition).is_valid(body):
        return body  # type: ignore[no-any-return]
    validator = _def_validator(name, definition)
    fields: list[FieldError] = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        fields.extend(f for f in _field_errors(err) if f not in fields)
        if len(fields) >= MAX_FIELD_ERRORS:
            break
    if not fields:  # the two validators disagree: still refuse, never let it through
        fields = [FieldError("/", "does not match the schema")]
    raise RequestError("request does not match the schema", fields=fields[:MAX_FIELD_ERRORS])


def decision_validator() -> Any:
    """Validator of the policy decision document (data.pdp.decision)."""
    return fast_validator("decision")


def validate_request(body: Any) -> dict[str, Any]:
    """Return ``body`` if it is a valid decision request, else raise :class:`RequestError`.

    Error messages name the field by JSON pointer and never echo the submitted value
    (a token or prompt must not come back in an error body or a log line).
    """
    if fast_validator("decision-request").is_valid(body):
        return body  # type: ignore[no-any-return]
    fields: list[FieldError] = []
    errors = _validator("decision-request").iter_errors(body)
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        # jsonschema reports "required" once per missing member, and each report lists
        # them all: keep each field error once.
        fields.extend(f for f in _field_errors(err) if f not in fields)
        if len(fields) >= MAX_FIELD_ERRORS:
            break
    if not fields:  # the two validators disagree: still refuse, never let it through
        fields = [FieldError("/", "does not match the schema")]
    raise RequestError("request does not match the schema", fields=fields[:MAX_FIELD_ERRORS])


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def field_errors(err: ValidationError) -> list[FieldError]:
    """The field errors (JSON pointer, value-free message) of one jsonschema error."""
    return _field_errors(err)


def _field_errors(err: ValidationError) -> list[FieldError]:
    here = list(err.absolute_path)
    val: Any = err.validator_value
    instance: Any = err.instance
    if err.validator == "required" and isinstance(instance, dict):
        return [FieldError(_pointer([*here, p]), "is required") for p in val if p not in instance]
    if err.validator == "additionalProperties" and isinstance(instance, dict):
        schema: Any = err.schema
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        return [FieldError(_pointer([*here, k]), "is not a known field") for k in extra]
    return [FieldError(_pointer(here), _message(str(err.validator), val))]


def _message(keyword: str, val: Any) -> str:
    """A message for a failed keyword that states the rule, never the submitted value."""
    match keyword:
        case "type":
            return "must be of type " + (" or ".join(val) if isinstance(val, list) else str(val))
        case "enum":
            return "must be one of: " + ", ".join(map(str, val))
        case "const":
            return f"must be {val!r}"
        case "pattern":
            return "has characters or a form that is not allowed here"
        case "minLength":
            return "must not be empty" if val == 1 else f"must be at least {val} characters"
        case "maxLength":
            return f"must be at most {val} characters"
        case "maxItems":
            return f"must have at most {val} items"
        case "minItems":
            return "must not be empty" if val == 1 else f"must have at least {val} items"
        case "minimum":
            return f"must be at least {val}"
        case "maximum":
            return f"must be at most {val}"
        case "uniqueItems":
            return "must not contain duplicates"
        case "maxProperties":
            return f"must have at most {val} members"
        case _:
            return f"fails the {keyword!r} constraint"
