"""What every route checks before FastAPI reads the request body: the key, the media type, the JSON.

`GatedRoute` is the router's route class. Its handler runs before FastAPI's own, which reads and parses
the body before it solves any dependency, and checks in this order:

1. **The API key**, for a route that declares the tenant (`nasfleet.server.api.auth.current_tenant`):
   a 401 is answered before a byte of the body is received, so an unauthenticated body costs the
   server neither memory nor parsing. The tenant found is left in ``request.state.tenant``.
2. **The media type**, for a route with a JSON body: ``Content-Type`` must be ``application/json`` (or
   ``application/<x>+json``), with no charset but UTF-8; anything else, or none, is a 415
   ``unsupported_media_type``, again before the body is read.
3. **The JSON itself**: every body that is no JSON document answers 400 ``malformed_json``, whatever
   the reason: empty, not UTF-8 (JSON travels as UTF-8), a syntax error, ``NaN`` or ``Infinity`` (which
   Python's parser takes but JSON has not), nesting deeper than the parser allows, or an integer of
   more digits than Python converts. `JsonRequest` turns each reason
   into the `json.JSONDecodeError` FastAPI reports as ``json_invalid`` (see `errors.py`).

The body-size limit (`nasfleet.server.api.limits.BodySizeLimit`) wraps all of this: the body is counted
as it is received, whoever receives it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from nasfleet.server.api.auth import current_tenant, presented_key, registry_of, tenant_of_key
from nasfleet.server.api.errors import ApiError, malformed
from nasfleet.server.api.schemas import FieldProblem

JSON_MEDIA_TYPE = "application/json"
UTF8_NAMES = ("utf-8", "utf8")


class _NotJsonError(ValueError):
    """A token Python's parser takes and JSON has not: ``NaN``, ``Infinity``, ``-Infinity``."""


def _no_constant(token: str) -> Any:
    raise _NotJsonError(f"it holds {token}, which is no JSON number")


def parse_json(body: bytes) -> Any:
    """The JSON document *body* holds; for any other bytes a `json.JSONDecodeError` saying why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError(f"byte {error.start} is not UTF-8 ({error.reason})", "", 0) from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except _NotJsonError as error:
        raise json.JSONDecodeError(str(error), "", 0) from None
    except json.JSONDecodeError as error:
        raise json.JSONDecodeError(f"it breaks JSON syntax at character {error.pos}: {error.msg}", "",
                                   0) from None  # fmt: skip
    except RecursionError:
        raise json.JSONDecodeError("it nests deeper than the parser allows", "", 0) from None
    except ValueError as error:  # an integer of more digits than int() converts
        raise json.JSONDecodeError(f"it holds a number the parser refuses: {error}", "", 0) from None


class JsonRequest(Request):
    """A request whose `json` refuses every body that is not a UTF-8 JSON document the same way."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def media_type_problem(content_type: str | None) -> str | None:
    """Why *content_type* is no JSON media type (None when it is one)."""
    if not content_type:
        return f"must be {JSON_MEDIA_TYPE!r}, but got none"
    media, *parameters = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return f"must be {JSON_MEDIA_TYPE!r}, but got {content_type[:100]!r}"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8_NAMES:
            return f"must name no charset but utf-8, but got {content_type[:100]!r}"
    return None


def needs_tenant(dependant: Dependant) -> bool:
    """Whether the route (or any of its dependencies) declares the tenant."""
    return any(d.call is current_tenant or needs_tenant(d) for d in dependant.dependencies)


class GatedRoute(APIRoute):
    """A route that authenticates, then checks the body's media type and JSON, before FastAPI reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticated, takes_body = needs_tenant(self.dependant), self.body_field is not None

        async def gated(request: Request) -> Response:
            if authenticated:
                key = presented_key(request.headers)
                request.state.tenant = await run_in_threadpool(tenant_of_key, registry_of(request), key)
            if takes_body:
                problem = media_type_problem(request.headers.get("content-type"))
                if problem is not None:
                    field = FieldProblem(field="content-type", location="header", message=problem)
                    raise ApiError(415, "unsupported_media_type", f"Content-Type {problem}", [field])
                request = JsonRequest(request.scope, request.receive)
                if not await request.body():
                    raise malformed("it is empty")
            return await handler(request)

        return gated
