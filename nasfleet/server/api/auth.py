"""Who is asking: every route but the health check needs a tenant's API key.

The key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; both schemes are published
in the OpenAPI schema. `Registry.verify_api_key` checks it against the salted hash the registry stores
(keys are created, shown once and revoked with ``nasfleet tenants``). A missing, malformed, unknown or
revoked key gets the same 401. A key that cannot be one (over 256 characters, or anything but visible
ASCII: a space, a control character, a NUL byte) is refused without asking the registry.

The check runs before the request's body is read (`nasfleet.server.api.gate.GatedRoute` calls
`tenant_of_key` first and leaves the tenant in ``request.state.tenant``), so an unauthenticated body is
neither received nor parsed. `current_tenant` is the dependency the routes declare: it publishes the two
schemes in the schema and hands the route the tenant the gate found (checking the key itself when a
route is not gated).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from nasfleet.server.api.errors import ApiError
from nasfleet.server.registry import Registry

MAX_KEY_LENGTH = 256
KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")
bearer_scheme = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")


def unauthorized() -> ApiError:
    message = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: ``Authorization: Bearer`` credentials first, else ``X-API-Key``."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():  # as `HTTPBearer` reads it
        return credentials.strip()
    return headers.get("x-api-key")


def tenant_of_key(registry: Registry, key: str | None) -> str:
    """The name of the tenant whose valid, unrevoked key *key* is; the 401 `ApiError` otherwise."""
    if key is None or KEY_PATTERN.fullmatch(key) is None:
        raise unauthorized()
    tenant = registry.verify_api_key(key)
    if tenant is None:
        raise unauthorized()
    return tenant.name


def current_tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header: Annotated[str | None, Security(header_scheme)],
) -> str:
    """The name of the tenant whose key the request carries; 401 otherwise."""
    tenant = getattr(request.state, "tenant", None)
    if isinstance(tenant, str):
        return tenant
    return tenant_of_key(registry_of(request), bearer.credentials if bearer is not None else header)


Tenant = Annotated[str, Depends(current_tenant)]
