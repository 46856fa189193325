"""Credential-signing keys: one per replica, published as a JWKS, rotated without restart.

Each replica (a *node*) keeps its private keys in its own state directory and nowhere
else::

    <state_dir>/keys/            0700
    <state_dir>/keys/node-id     this replica's id (random, created once)
    <state_dir>/keys/<kid>.pem   0600  EC private key, PKCS#8 PEM; kid = RFC 7638 thumbprint

The store holds each key's metadata and *public* JWK (:class:`~pdp.store.KeyRecord`), so
every replica serves one JWKS with all keys any replica may have signed with. Keys are
loaded once and kept as ``cryptography`` key objects; the JWS header of the current key is
encoded once, so minting is one ECDSA signature plus the payload's JSON.

Rotation: the store's rotation *generation* counts requested rotations. ``rotate()`` bumps
it and rotates this replica at once; every other replica sees the new generation (pub/sub
or its periodic refresh) and rotates itself. The previous key is marked retired with
``drop_after`` = the latest ``exp`` it signed + leeway, stays in the JWKS until then (so
credentials in flight keep verifying), and is then dropped (and its file deleted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)
from jwt.algorithms import ECAlgorithm
from jwt.exceptions import PyJWTError

from .jws import ALGORITHMS, b64url, jwk_thumbprint, verify_es
from .store import KeyRecord, Store

__all__ = ["ALGORITHMS", "KeyRing", "SigningKey", "b64url", "public_jwk", "verify_es"]

_NODE_FILE: Final = "node-id"

log = logging.getLogger("pdp.keys")


class SigningKey:
    """A private key ready to sign: header segment pre-encoded, hash object pre-built."""

    __slots__ = ("alg", "kid", "private_key", "_ecdsa", "_prefix", "_size")

    def __init__(self, kid: str, alg: str, private_key: ec.EllipticCurvePrivateKey, typ: str):
        spec = ALGORITHMS[alg]
        self.kid = kid
        self.alg = alg
        self.private_key = private_key
        self._ecdsa = ec.ECDSA(spec.hash())
        self._size = spec.size
        header = orjson.dumps({"alg": alg, "kid": kid, "typ": typ})
        self._prefix = b64url(header) + b"."

    def sign(self, payload: bytes) -> str:
        """The compact JWS of ``payload`` (already JSON)."""
        signing_input = self._prefix + b64url(payload)
        r, s = decode_dss_signature(self.private_key.sign(signing_input, self._ecdsa))
        signature = r.to_bytes(self._size, "big") + s.to_bytes(self._size, "big")
        return (signing_input + b"." + b64url(signature)).decode("ascii")


def public_jwk(key: ec.EllipticCurvePrivateKey, alg: str) -> dict[str, Any]:
    """The public JWK of ``key``: kty, crv, x, y, kid (thumbprint), use "sig", alg."""
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": jwk_thumbprint(jwk), "use": "sig", "alg": alg}


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (fsynced, then renamed)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make the leaf 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class KeyRing:
    """This replica's signing key plus every key's public half (see the module doc)."""

    def __init__(
        self,
        keys_dir: Path,
        store: Store,
        *,
        alg: str = "ES256",
        typ: str,
        max_ttl_s: int,
        leeway_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        self.keys_dir = keys_dir
        self.store = store
        self.alg = alg
        self.typ = typ
        self.max_ttl_s = max_ttl_s
        self.leeway_s = leeway_s
        self.clock = clock
        self.node = ""
        self._current: SigningKey | None = None
        self._generation = 0
        #: The latest exp signed with the current key (conservative after a restart).
        self._last_exp = 0.0
        self._records: dict[str, KeyRecord] = {}
        self._public: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        self._jwks = b'{"keys":[]}'

    # -- reading ----------------------------------------------------------------------
    @property
    def current(self) -> SigningKey:
        if self._current is None:
            raise RuntimeError("the key ring has not started")
        return self._current

    def note_exp(self, exp: float) -> None:
        """Record that the current key signed a credential expiring at ``exp``."""
        if exp > self._last_exp:
            self._last_exp = exp

    def public_key(self, kid: str) -> tuple[str, ec.EllipticCurvePublicKey] | None:
        """(alg, public key) of a key still in the JWKS, or None."""
        return self._public.get(kid)

    @property
    def jwks(self) -> bytes:
        """The JWKS document (JSON bytes), rebuilt only when the key set changes."""
        return self._jwks

    def records(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.kid))

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Load this node's current key, or make one; publish it; load the others."""
        private_dir(self.keys_dir)
        self.node = self._node_id()
        records = {r.kid: r for r in await self.store.list_keys()}
        generation = await self.store.rotation_generation()
        now = self.clock()
        mine = sorted(
            (
                r
                for r in records.values()
                if r.node == self.node and r.state == "current" and r.alg == self.alg
            ),
            key=lambda r: r.created_at,
        )
        usable = [r for r in mine if self._pem(r.kid).is_file()]
        if usable:
            chosen = usable[-1]
            self._current = SigningKey(chosen.kid, chosen.alg, self._load(chosen.kid), self.typ)
            self._generation = chosen.generation
            # Credentials signed before a restart may live until now + the TTL cap.
            self._last_exp = now + self.max_ttl_s
        stale = [r for r in mine if self._current is None or r.kid != self._current.kid]
        if stale:  # e.g. a key file deleted by hand: retire what we cannot sign with
            drop = now + self.max_ttl_s + self.leeway_s
            await self.store.put_keys(
                [
                    dataclasses.replace(r, state="retired", retired_at=now, drop_after=drop)
                    for r in stale
                ]
            )
        self._set_records(await self.store.list_keys())
        if self._current is None or self._generation < generation:
            await self._rotate_local(max(generation, self._generation))
        else:
            await self.refresh()
        log.info(
            "signing with key %s (%s, node %s); %d key(s) in the JWKS",
            self.current.kid,
            self.alg,
            self.node,
            len(self._public),
        )

    async def rotate(self) -> KeyRecord:
        """Ask every replica to rotate; rotate this one now. Returns the new current key."""
        generation = await self.store.bump_rotation_generation()
        return await self._rotate_local(generation)

    async def refresh(self) -> None:
        """Reload key metadata; follow a rotation another replica asked for; drop keys no
        credential can still need."""
        generation = await self.store.rotation_generation()
        if self._current is not None and generation > self._generation:
            await self._rotate_local(generation)
            return
        now = self.clock()
        records = await self.store.list_keys()
        for r in records:
            if r.state == "retired" and r.drop_after is not None and r.drop_after <= now:
                await self.store.delete_key(r.kid)
                if r.node == self.node:
                    self._pem(r.kid).unlink(missing_ok=True)
                log.info("dropped retired signing key %s from the JWKS", r.kid)
        self._set_records([r for r in records if not _droppable(r, now)])

    async def _rotate_local(self, generation: int) -> KeyRecord:
        now = self.clock()
        key = ec.generate_private_key(ALGORITHMS[self.alg].curve())
        jwk = public_jwk(key, self.alg)
        kid = jwk["kid"]
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(self._pem(kid), pem)
        record = KeyRecord(
            kid=kid,
            alg=self.alg,
            jwk=jwk,
            node=self.node,
            created_at=now,
            state="current",
            generation=generation,
        )
        updates = [record]
        previous = self._current
        if previous is not None:
            old = self._records.get(previous.kid)
            if old is not None:
                drop_after = max(self._last_exp, now) + self.leeway_s
                updates.append(
                    dataclasses.replace(old, state="retired", retired_at=now, drop_after=drop_after)
                )
        # Publish the new public key before signing with it: a target that fetches the
        # JWKS on an unknown kid must find it.
        await self.store.put_keys(updates)
        self._records.update({r.kid: r for r in updates})
        self._set_records(list(self._records.values()))
        self._current = SigningKey(kid, self.alg, key, self.typ)
        self._generation = generation
        self._last_exp = now
        if previous is not None:
            log.info("rotated signing key %s -> %s (generation %d)", previous.kid, kid, generation)
        await self.refresh()
        await self.store.publish("keys")  # the other replicas publish it in their JWKS now
        return record

    async def reload(self) -> None:
        """Re-read the key set from the store (no rotation, no drops): for the JWKS
        endpoint, so a key another replica just created is published at once."""
        now = self.clock()
        self._set_records([r for r in await self.store.list_keys() if not _droppable(r, now)])

    # -- helpers ----------------------------------------------------------------------
    def _set_records(self, records: list[KeyRecord]) -> None:
        self._records = {r.kid: r for r in records}
        public: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        for r in records:
            cached = self._public.get(r.kid)
            if cached is not None:
                public[r.kid] = cached
                continue
            try:
                parsed = ECAlgorithm.from_jwk(r.jwk)
            except (PyJWTError, ValueError, TypeError, KeyError) as exc:  # written badly: skip
                log.error("key %s in the store has an unusable JWK: %s", r.kid, exc)
                continue
            if isinstance(parsed, ec.EllipticCurvePublicKey) and r.alg in ALGORITHMS:
                public[r.kid] = (r.alg, parsed)
        self._public = public
        keys = [self._records[kid].jwk for kid in sorted(public)]
        self._jwks = orjson.dumps({"keys": keys})

    def _pem(self, kid: str) -> Path:
        return self.keys_dir / f"{kid}.pem"

    def _load(self, kid: str) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self._pem(kid).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"signing key {kid} is not an EC key")
        return key

    def _node_id(self) -> str:
        path = self.keys_dir / _NODE_FILE
        try:
            node = path.read_text().strip()
        except FileNotFoundError:
            node = ""
        if not node:
            node = secrets.token_hex(8)
            write_private(path, node.encode() + b"\n")
        return node


def _droppable(record: KeyRecord, now: float) -> bool:
    return record.state == "retired" and record.drop_after is not None and record.drop_after <= now
