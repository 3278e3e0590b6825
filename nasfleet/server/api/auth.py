"""Who is asking: every route but the health check needs a tenant's API key.

The key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; both schemes are published
in the OpenAPI schema. `Registry.verify_api_key` checks it against the salted hash the registry stores
(keys are created, shown once and revoked with ``nasfleet tenants``). A missing, malformed, unknown or
revoked key gets the same 401.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nasfleet.server.api.errors import ApiError
from nasfleet.server.registry import Registry

MAX_KEY_LENGTH = 256
bearer_scheme = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")


def unauthorized() -> ApiError:
    message = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def current_tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header: Annotated[str | None, Security(header_scheme)],
) -> str:
    """The name of the tenant whose key the request carries; 401 otherwise."""
    key = bearer.credentials if bearer is not None else header
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
        raise unauthorized()
    tenant = registry_of(request).verify_api_key(key)
    if tenant is None:
        raise unauthorized()
    return tenant.name


Tenant = Annotated[str, Depends(current_tenant)]
