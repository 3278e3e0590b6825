"""The API's 4xx answers: one body (`ErrorBody`) for all, each validation problem naming its field.

`ApiError` is what the routes raise. Pydantic's errors become 422 answers whose fields read like the
request (``characteristics.input_shape[1]``); a body that is no JSON document at all is a 400
``malformed_json`` (whatever the reason: see `nasfleet.server.api.gate`), one of another media type a 415
``unsupported_media_type``. Nothing a client sends can produce a 5xx but a failing registry (503, without
its details).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nasfleet.server.api.schemas import ARRAY_TAGS, ErrorBody, FieldProblem
from nasfleet.server.registry import RegistryError

log = logging.getLogger(__name__)
LOCATIONS = ("body", "query", "path", "header")


class ApiError(Exception):
    """An answer other than success: status, stable code, message, the fields at fault, extra headers."""

    def __init__(
        self, status: int, error: str, message: str, fields: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.fields, self.headers = list(fields), dict(headers or {})

    def response(self) -> JSONResponse:
        body = ErrorBody(error=self.error, message=self.message, fields=self.fields)
        return JSONResponse(body.model_dump(mode="json"), status_code=self.status, headers=self.headers)


def invalid(field: str, message: str, location: str = "body") -> ApiError:
    """A 422 naming one field; *message* states the rule and the value received."""
    problem = FieldProblem(field=field, location=location, message=message)  # type: ignore[arg-type]
    return ApiError(422, "invalid_request", f"{field}: {message}", [problem])


def malformed(reason: str) -> ApiError:
    """The 400 for a body that is no JSON document; *reason* says why (``it is empty``)."""
    problem = FieldProblem(field="body", location="body", message=f"must be a JSON document, but {reason}")
    return ApiError(400, "malformed_json", f"the body {problem.message}", [problem])


def field_name(loc: Sequence[str | int]) -> tuple[str, str]:
    """(``a.b[2].c``, location) from a Pydantic error location, without union member tags."""
    location = str(loc[0]) if loc and loc[0] in LOCATIONS else "body"
    parts = loc[1:] if loc and loc[0] in LOCATIONS else loc
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part not in ARRAY_TAGS:
            name += f".{part}" if name else str(part)
    return name or location, location


def _problems(errors: Sequence[Mapping[str, Any]]) -> list[FieldProblem]:
    problems = []
    for error in errors[:20]:
        field, location = field_name(error.get("loc", ()))
        shown = repr(error.get("input"))[:100] if "input" in error else "nothing"
        message = f"{error.get('msg', 'invalid')}, but got {shown}"
        problems.append(FieldProblem(field=field, location=location, message=message))  # type: ignore[arg-type]
    return problems


async def _on_validation(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = list(error.errors())
    if any(item.get("type") == "json_invalid" for item in errors):
        detail = next(item for item in errors if item.get("type") == "json_invalid")
        return malformed(str(detail.get("ctx", {}).get("error", "it is not"))).response()
    problems = _problems(errors)
    message = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    return ApiError(422, "invalid_request", message, problems).response()


async def _on_api_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error.response()


async def _on_http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    code = codes.get(error.status_code, "http_error")
    return ApiError(error.status_code, code, str(error.detail), headers=error.headers).response()


async def _on_registry_error(_request: Request, error: Exception) -> JSONResponse:
    log.error("nasfleet api: registry error: %s", error)
    return ApiError(503, "unavailable", "the registry is unavailable; try again").response()


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RegistryError, _on_registry_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not a JSON document (malformed_json)"},
    401: {"model": ErrorBody, "description": "No valid API key"},
    404: {"model": ErrorBody, "description": "No such job of this tenant"},
    409: {"model": ErrorBody, "description": "The job is not in a state that allows this"},
    413: {"model": ErrorBody, "description": "The body is larger than the server accepts"},
    415: {"model": ErrorBody, "description": "The body's Content-Type is not application/json"},
    422: {"model": ErrorBody, "description": "A field breaks a rule; each problem names its field"},
    429: {"model": ErrorBody, "description": "The tenant has too many unfinished jobs"},
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The declared error answers of a route: 401 and 422 always, plus *statuses*."""
    return {status: ERROR_RESPONSES[status] for status in sorted({401, 422, *statuses})}
