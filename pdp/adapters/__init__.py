"""Front doors: standard wire formats translated to and from the one decision path.

Each adapter parses its wire format, builds a decision request, calls
:meth:`pdp.decision.DecisionService.decide` (same authentication, normaliser, OPA client,
minting and audit record as ``POST /v1/decisions``) and translates the decision back.
Adapters sit above the decision service: they import it (and read the running app's
resources from :mod:`pdp.state`), never the other way round.

    authzen          OpenID AuthZEN Authorization API 1.0 (/access/v1/*, well-known)
    ext_authz_http   Envoy ext_authz, HTTP service mode (/ext_authz/...)
    ext_authz_grpc   Envoy ext_authz, gRPC envoy.service.auth.v3.Authorization/Check
    ext_authz        what both ext_authz modes share: route matching -> decision -> verdict
"""

from __future__ import annotations
