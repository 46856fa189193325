#!/usr/bin/env python3
"""Micro-benchmark: CPU cost of the credential minted on every allow.

Measures, in CPU time (``time.process_time``) per operation, best of ``--rounds`` rounds of
``--n`` operations each, in this process (no HTTP, no OPA):

  ecdsa      the bare ECDSA signature (cryptography/OpenSSL), the floor for the algorithm
  sign       SigningKey.sign: ECDSA + DER -> raw (r||s) + base64url of a credential payload
  mint       CredentialService.mint: claims, JSON, jti, sign
  per_allow  CredentialService.after_decision on an allow: mint + agent activity bookkeeping

The last line is one JSON object with the figures (microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from pdp.config import Settings  # noqa: E402
from pdp.credentials import CredentialService  # noqa: E402
from pdp.identity import Identity  # noqa: E402

EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"


def best_us(fn: Callable[[], Any], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - started) / n)
    return round(best * 1e6, 1)


async def measure(alg: str, n: int, rounds: int) -> dict[str, Any]:
    request = json.loads(EXAMPLE.read_text())["request"]
    spiffe_id = json.loads(EXAMPLE.read_text())["spiffe_id"]
    identity = Identity(
        authenticated=True,
        spiffe_id=spiffe_id,
        trust_domain="acme.example",
        path=tuple(spiffe_id.split("/")[3:]),
    )
    response: dict[str, Any] = {
        "allow": True,
        "obligations": {"credential": {"ttl_seconds": 120}, "recheck_at_target": False},
    }
    with tempfile.TemporaryDirectory(prefix="pdp-mint-") as state:
        settings = Settings(
            state_dir=Path(state), admin_token="bench-admin-token-0123", credential_alg=alg
        )
        service = await CredentialService.start(settings)
        try:
            key = service.keyring.current
            token = service.mint("d", request, identity, response["obligations"]).token
            payload = token.split(".")[1].encode()
            ecdsa = ec.ECDSA({"ES256": hashes.SHA256, "ES384": hashes.SHA384}.get(
                alg, hashes.SHA512)())  # fmt: skip
            return {
                "alg": alg,
                "token_bytes": len(token),
                "ecdsa_us": best_us(lambda: key.private_key.sign(payload, ecdsa), n, rounds),
                "sign_us": best_us(lambda: key.sign(payload), n, rounds),
                "mint_us": best_us(
                    lambda: service.mint("d", request, identity, response["obligations"]),
                    n,
                    rounds,
                ),
                "per_allow_us": best_us(
                    lambda: service.after_decision("d", request, identity, response), n, rounds
                ),
            }
        finally:
            await service.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--alg", default="ES256", choices=["ES256", "ES384", "ES512"])
    args = ap.parse_args()
    result = asyncio.run(measure(args.alg, args.n, args.rounds))
    for name in ("ecdsa_us", "sign_us", "mint_us", "per_allow_us"):
        print(f"  {name:<13} {result[name]:7.1f} us")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
