"""The API's routes, one router per audience: scoring, identity reads, SageMaker hosting, operations.

Each module gives ``router(service, config)`` and ``rules(config)``: the paths it protects, the scope each
needs and the kind of work it is, which the admission middleware (``serving.guard``) enforces before a
route runs. A new audience (the review console's ``review`` scope) is a new module listed in
``serving.app``, nothing else.

Routes are plain (sync) functions where they block on the graph or torch: FastAPI runs them on its thread
pool and requests are the parallelism. Scoring routes return orjson bytes directly (``json_response``: the
service builds the response to the schema, so there is no second pydantic pass). Errors never echo request values — a rejected email or
phone would otherwise come back verbatim in a 422 body (FastAPI's default) and land in the caller's logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from identigraph.errors import Forbidden
from identigraph.serving import schemas as s
from identigraph.serving.config import ApiKey

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the team's API key")
_bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": s.Problem}, 401: {"model": s.Problem}, 403: {"model": s.Problem}, 408: {"model": s.Problem},
    413: {"model": s.Problem}, 422: {"model": s.Problem}, 429: {"model": s.Problem}, 503: {"model": s.Problem}}


def json_response(content: Any) -> Response:
    """orjson bytes for responses the service already built to the schema: no second pydantic pass."""
    return Response(orjson.dumps(content), media_type="application/json")


def problem(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error body in one shape: the detail and the request id the caller can quote."""
    return JSONResponse({"detail": detail, "request_id": getattr(request.state, "request_id", None)},
                        status_code=status, headers=headers)


def safe_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be a raw email or phone)."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]


def require(scope: str):
    """The caller's key, as admission checked it (the security parameters are for the OpenAPI schema)."""

    def check(request: Request, key: str | None = Security(_api_key),
              bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> ApiKey:
        found: ApiKey | None = getattr(request.state, "api_key", None)
        if found is None:  # a route outside admission's rules: check it here, one token like admission's
            found = request.app.state.auth.check(key or (bearer.credentials if bearer else None), scope)
            request.state.caller = found.id
        elif scope not in found.scopes:
            raise Forbidden(f"key {found.id!r} lacks the scope {scope!r}")
        return found

    return check


def charge(request: Request, key: ApiKey | None, cost: float) -> None:
    """The rest of a call's cost: admission took one token already. Raises RateLimited or TooCostly."""
    if key is not None and cost > 1:
        request.app.state.auth.charge(key, cost - 1)


def sees_identities(key: ApiKey | None) -> bool:
    """Evidence (identifier ids, their counts) and attributions go only to keys that may read identities."""
    return key is not None and "identity:read" in key.scopes
