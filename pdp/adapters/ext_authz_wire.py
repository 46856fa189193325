"""The allow ``CheckResponse`` of the gRPC door, encoded from a skeleton computed once.

An allow is the gRPC door's hot path. Built as protobuf objects per call (a
``HeaderValueOption`` per header, a ``google.protobuf.Struct`` for the dynamic metadata)
it cost about as much CPU as the rest of the adapter and a tenth of a whole decision
(bench/README.md). Its shape never changes — status OK, an ``OkHttpResponse`` with the
``authorization`` and ``x-pdp-decision-id`` headers (``OVERWRITE_IF_EXISTS_OR_ADD``), the
token header to remove, and the metadata ``{decision_id, allow: true, reasons: []}`` — so
only the credential, the decision id and the removed header vary. The constant parts are
serialized here once *by protobuf itself* (field numbers read from the generated
descriptors, never written by hand); per call the varying strings are framed as protobuf
length-delimited fields and concatenated. ``tests/test_ext_authz.py`` proves the bytes
parse to exactly the message :func:`pdp.adapters.ext_authz_grpc.to_check_response` builds.
Denies (rare, carrying a JSON body of reasons) are still built as protobuf objects.
"""

from __future__ import annotations

from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from .ext_authz import DECISION_HEADER

__all__ = ["encode_allow"]


def _number(message: Any, field: str) -> int:
    number: int = message.DESCRIPTOR.fields_by_name[field].number
    return number


_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_OK_RESPONSE: Final = _tag(_number(external_auth_pb2.CheckResponse, "ok_response"))
_METADATA: Final = _tag(_number(external_auth_pb2.CheckResponse, "dynamic_metadata"))
_HEADERS: Final = _tag(_number(external_auth_pb2.OkHttpResponse, "headers"))
_REMOVE: Final = _tag(_number(external_auth_pb2.OkHttpResponse, "headers_to_remove"))
_HEADER: Final = _tag(_number(base_pb2.HeaderValueOption, "header"))
_KEY: Final = _tag(_number(base_pb2.HeaderValue, "key"))
_VALUE: Final = _tag(_number(base_pb2.HeaderValue, "value"))
_ENTRY: Final = _tag(_number(struct_pb2.Struct, "fields"))
_ENTRY_KEY: Final = _tag(_number(struct_pb2.Struct.FieldsEntry, "key"))
_ENTRY_VALUE: Final = _tag(_number(struct_pb2.Struct.FieldsEntry, "value"))
_STRING: Final = _tag(_number(struct_pb2.Value, "string_value"))

#: Serialized by protobuf: the OK status, the append action of every header, and the
#: metadata entries that never change.
_STATUS_OK: Final[bytes] = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK)
).SerializeToString()
_OVERWRITE: Final[bytes] = base_pb2.HeaderValueOption(
    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
).SerializeToString()
_ALLOW_AND_REASONS: Final[bytes] = struct_pb2.Struct(
    fields={
        "allow": struct_pb2.Value(bool_value=True),
        "reasons": struct_pb2.Value(list_value=struct_pb2.ListValue()),
    }
).SerializeToString(deterministic=True)


_AUTHORIZATION: Final = _field(_KEY, b"authorization")
_DECISION: Final = _field(_KEY, DECISION_HEADER.encode())
_DECISION_ID_KEY: Final = _field(_ENTRY_KEY, b"decision_id")


def _option(key_field: bytes, value: bytes) -> bytes:
    """One ``headers`` entry: HeaderValueOption{header{key, value}, OVERWRITE_IF_EXISTS_OR_ADD}."""
    pair = key_field + _VALUE + _varint(len(value)) + value
    option = _HEADER + _varint(len(pair)) + pair + _OVERWRITE
    return _HEADERS + _varint(len(option)) + option


def encode_allow(credential: str, decision_id: str, remove: tuple[str, ...] = ()) -> bytes:
    """The serialized allow ``CheckResponse``: ``authorization: Bearer <credential>`` and
    ``x-pdp-decision-id`` overwritten upstream, ``remove`` headers removed, metadata
    ``{decision_id, allow: true, reasons: []}``."""
    did = decision_id.encode()
    ok = _option(_AUTHORIZATION, b"Bearer " + credential.encode()) + _option(_DECISION, did)
    for name in remove:
        ok += _field(_REMOVE, name.encode())
    value = _STRING + _varint(len(did)) + did
    entry = _DECISION_ID_KEY + _ENTRY_VALUE + _varint(len(value)) + value
    metadata = _ENTRY + _varint(len(entry)) + entry + _ALLOW_AND_REASONS
    return (
        _STATUS_OK
        + _OK_RESPONSE
        + _varint(len(ok))
        + ok
        + _METADATA
        + _varint(len(metadata))
        + metadata
    )
