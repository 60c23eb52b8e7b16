"""The HTTP API: scoring, identity reads, SageMaker-compatible invocations, health and metrics.

Routes are plain (sync) functions: the graph client and torch both block, so FastAPI runs each request
on its thread pool and requests are the parallelism. Errors never echo request values — a rejected email
or phone would otherwise come back verbatim in a 422 body (FastAPI's default) and land in whatever logs
the caller keeps.
"""


import json
import logging
import math
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, ValidationError, create_model

from identigraph.config import Settings
from identigraph.errors import ConfigError, SchemaError
from identigraph.serving import schemas as s
from identigraph.serving.auth import Authenticator, Forbidden, RateLimited, Unauthorized
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.service import GraphUnavailable, ScoringService

log = logging.getLogger("identigraph.serving")
access = logging.getLogger("identigraph.serving.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_CUSTOMER_ID = re.compile(s.CUSTOMER_ID)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the team's API key")
_bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")


def require(scope: str):
    def check(request: Request, key: str | None = Security(_api_key),
              bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> ApiKey:
        found = request.app.state.auth.check(key or (bearer.credentials if bearer else None), scope)
        request.state.caller = found.id
        return found

    return check


_SCORING = ("/v1/score", "/invocations")


class RequestContext:
    """Pure ASGI middleware: request ids, access log, latency and status metrics, and load shedding.

    Scoring requests beyond ``max_in_flight`` are answered 503 at once instead of queueing: past that
    point each one would only wait behind the others until its caller gave up, and the server would then
    spend its time on answers nobody reads. A fast 503 lets the caller fall back (allow and check later).
    """

    def __init__(self, app: Any, service: ScoringService, max_in_flight: int) -> None:
        self.app = app
        self.metrics = service.metrics
        self.max_in_flight = max_in_flight
        self.scoring = 0  # touched only on the event loop: no lock

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        scoring = scope["path"].startswith(_SCORING)
        self.metrics.in_flight.inc()
        self.scoring += scoring
        try:
            if scoring and self.scoring > self.max_in_flight:
                body = json.dumps({"detail": f"overloaded: {self.max_in_flight} scoring requests in flight",
                                   "request_id": request_id}).encode()
                await send_with_id({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"retry-after", b"1")]})
                await send_with_id({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send_with_id)
        finally:
            self.scoring -= scoring
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route=route).observe(seconds)
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            if access.isEnabledFor(logging.INFO):
                access.info(json.dumps({"request_id": request_id, "method": scope["method"], "route": route,
                                        "status": status["code"], "ms": round(seconds * 1000, 2),
                                        "caller": scope["state"].get("caller")}))


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _problem(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": getattr(request.state, "request_id", None)},
                        status_code=status, headers=headers)


def _safe_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be a raw email or phone)."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return _problem(request, 401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return _problem(request, 403, str(exc))

    @app.exception_handler(RateLimited)
    async def limited(request: Request, exc: RateLimited) -> JSONResponse:
        return _problem(request, 429, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(request, 422, _safe_errors(exc.errors()))

    @app.exception_handler(SchemaError)
    async def bad_identifier(request: Request, exc: SchemaError) -> JSONResponse:
        field = str(exc).split(":", 1)[0]  # the messages name the field first; the value is not repeated
        return _problem(request, 422, [{"loc": ["body", "identifiers", field], "msg": f"not a valid {field}",
                                        "type": "identifier"}])

    @app.exception_handler(GraphUnavailable)
    async def graph_down(request: Request, exc: GraphUnavailable) -> JSONResponse:
        return _problem(request, 503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error(json.dumps({"event": "internal_error", "request_id": getattr(request.state, "request_id", None),
                              "error": type(exc).__name__}))
        return _problem(request, 500, "internal error")


def create_app(settings: Settings, serving_config: ServingConfig, model_dir: Path | str | None = None, *,
               service: ScoringService | None = None, **service_kwargs: Any) -> FastAPI:
    """Build the API. ``model_dir=None`` serves without a model: every decision is a degraded review."""
    if settings.profile == "production":
        published = [k.id for k in serving_config.api_keys if k.local_only]
        if published:
            raise ConfigError(f"api_keys: {published} are local_only (their key is published); "
                              f"the production profile refuses them")
    service = service or ScoringService(settings, serving_config, Path(model_dir) if model_dir else None,
                                        **service_kwargs)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        # off the event loop: the Gremlin driver closes its connections by running a loop of its own
        await run_in_threadpool(service.close)

    app = FastAPI(title="identigraph scoring and identity API", version="1",
                  description="Fraud scores and decisions from the identity graph, and identity reads.",
                  lifespan=lifespan)
    app.state.service = service
    app.state.auth = Authenticator(serving_config)
    app.add_middleware(RequestContext, service=service, max_in_flight=serving_config.max_in_flight)
    _install_errors(app)
    _routes(app, service, serving_config)
    return app


def _score_one(service: ScoringService, req: s.ScoreRequest, caller: str, request_id: str) -> dict[str, Any]:
    return service.score(req.customer_id, req.action, req.identifiers.model_dump() if req.identifiers else None,
                         caller, request_id, req.explain)


def _batch_models(limit: int) -> tuple[type, type]:
    """Batch bodies whose schema states the configured bound, so clients (and schemathesis) know it."""
    items = Field(min_length=1, max_length=limit, description=f"at most {limit} (max_batch)")
    batch = create_model("BatchRequest", __base__=s._Body, requests=(list[s.ScoreRequest], items))
    invocations = create_model("InvocationsJson", __base__=s._Body, instances=(list[s.ScoreRequest], items))
    return batch, invocations


def _routes(app: FastAPI, service: ScoringService, cfg: ServingConfig) -> None:
    BatchRequest, InvocationsJson = _batch_models(cfg.max_batch)
    responses = {401: {"model": s.Problem}, 403: {"model": s.Problem}, 429: {"model": s.Problem},
                 422: {"model": s.Problem}}

    # health and metrics run on the event loop, not the thread pool: they must answer while scoring saturates it
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. No dependency is checked (a graph outage must not restart us)."""
        return {"status": "ok"}

    def _readiness() -> tuple[bool, dict[str, Any]]:
        model = service.models.current
        graph = service.graph_reachable()
        body = {"model_version": getattr(model, "version", None), "graph": "reachable" if graph else "unreachable"}
        return model is not None and graph, body

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "model missing or graph unreachable"}})
    def readyz() -> JSONResponse:
        ok, body = _readiness()
        return JSONResponse({"status": "ready" if ok else "not ready", **body}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score", tags=["scoring"], response_model=s.ScoreResponse, responses=responses)
    def score(body: s.ScoreRequest, request: Request, key: ApiKey = Depends(require("score"))) -> Any:
        """Score a customer (or a signup not yet in the graph, from its identifiers) and decide."""
        # the service builds the response to the schema: orjson straight out, no second pydantic pass
        return _json(_score_one(service, body, key.id, request.state.request_id))

    @app.post("/v1/score:batch", tags=["scoring"], response_model=s.BatchResponse, responses=responses)
    def score_batch(body: BatchRequest, request: Request, key: ApiKey = Depends(require("score"))) -> Any:
        """Up to ``max_batch`` score requests in one call, answered in order."""
        rid = request.state.request_id
        return _json({"results": [_score_one(service, r, key.id, f"{rid}.{i}") for i, r in enumerate(body.requests)]})

    @app.get("/v1/customers/{customer_id}/identity", tags=["identity"], response_model=s.IdentityResponse,
             responses={**responses, 404: {"model": s.Problem}, 503: {"model": s.Problem}})
    def identity(request: Request, customer_id: str = s.customer_path(),
                 key: ApiKey = Depends(require("identity:read"))) -> Any:
        """The customer's identifiers (emails and phones pseudonymised) with first/last seen and counts."""
        found = service.identity(customer_id)
        return found if found is not None else _problem(request, 404, "customer not in the graph")

    @app.get("/v1/customers/{customer_id}/connections", tags=["identity"], response_model=s.ConnectionsResponse,
             responses={**responses, 404: {"model": s.Problem}, 503: {"model": s.Problem}})
    def connections(request: Request, customer_id: str = s.customer_path(),
                    depth: int = Query(1, ge=1, le=2, description="1: shares an identifier; 2: through one more"),
                    key: ApiKey = Depends(require("identity:read"))) -> Any:
        """Customers sharing the customer's identifiers (capped per identifier), with their block status."""
        found = service.connections(customer_id, depth)
        return found if found is not None else _problem(request, 404, "customer not in the graph")

    @app.post("/v1/admin/model:reload", tags=["ops"], response_model=s.ReloadResponse,
              responses={**responses, 404: {"model": s.Problem}, 409: {"model": s.Problem}})
    def reload(body: s.ReloadRequest, request: Request, key: ApiKey = Depends(require("model:admin"))) -> Any:
        """Load a model directory fully, then switch to it; requests in flight finish on the old one."""
        try:
            previous, version = service.models.reload(Path(body.model_dir))
        except Exception as exc:  # noqa: BLE001 — whatever is wrong with it, the old model keeps serving
            status = 404 if isinstance(exc, (SchemaError, OSError)) else 409  # 409: there, but incompatible
            return _problem(request, status, f"no loadable model at {body.model_dir} ({type(exc).__name__}); "
                                             f"still serving {getattr(service.models.current, 'version', None)}")
        log.info(json.dumps({"event": "model_reloaded", "by": key.id, "version": version, "previous": previous}))
        return {"previous_version": previous, "version": version}

    @app.get("/ping", tags=["sagemaker"], responses={503: {"description": "no model loaded"}})
    def ping() -> JSONResponse:
        """SageMaker's health check: 200 once a model is loaded."""
        model = service.models.current
        return JSONResponse({"model_version": getattr(model, "version", None)}, status_code=200 if model else 503)

    line = r'[ \t]*"?' + s.CUSTOMER_ID.strip("^$") + r'"?[ \t]*'  # what the CSV parser below accepts
    invocations_body = {
        "required": True,
        "content": {
            "application/json": {"schema": InvocationsJson.model_json_schema(
                ref_template="#/components/schemas/{model}")},
            "text/csv": {"schema": {"type": "string", "description": "one customer id per line",
                                    "pattern": rf"^({line}\r?\n){{0,{cfg.max_batch - 1}}}{line}\r?\n?$"}},
        },
    }

    def invocations_caller(request: Request, key: str | None = Security(_api_key),
                           bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> str:
        if cfg.invocations_open:
            return "sagemaker"
        return require("score")(request, key, bearer).id

    @app.post("/invocations", tags=["sagemaker"], openapi_extra={"requestBody": invocations_body},
              responses={**responses, 413: {"model": s.Problem},
                         200: {"content": {"application/json": {}, "text/csv": {}},
                               "description": "JSON predictions, or one score per line for text/csv"}})
    async def invocations(request: Request, caller: str = Depends(invocations_caller)) -> Response:
        """SageMaker hosting (and so Redshift ML): JSON ``{"instances": [...]}``, or CSV of customer ids."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await request.body()
        rid = request.state.request_id
        if ctype == "text/csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return _problem(request, 422, "text/csv body is not UTF-8")
            ids = [line.strip().strip('"').strip() for line in text.splitlines()]
            ids = [i for i in ids if i]
            if not ids:
                return _problem(request, 422, "text/csv: one customer id per line, none found")
            bad = [n for n, i in enumerate(ids, 1) if not _CUSTOMER_ID.match(i)]
            if bad:
                return _problem(request, 422, f"text/csv: lines {bad[:5]} are not customer ids")
            if len(ids) > cfg.max_batch:
                return _problem(request, 413, f"{len(ids)} lines; at most {cfg.max_batch} per call (max_batch)")
            results = await run_in_threadpool(
                lambda: [service.score(c, None, None, caller, f"{rid}.{n}") for n, c in enumerate(ids)])
            lines = ["" if r["score"] is None else f"{r['score']:.6f}" for r in results]
            return PlainTextResponse("\n".join(lines) + "\n", media_type="text/csv")
        if ctype != "application/json":
            return _problem(request, 415, "content type must be application/json or text/csv")
        try:
            body = InvocationsJson.model_validate_json(raw)
        except ValidationError as exc:
            return _problem(request, 422, _safe_errors(exc.errors()))
        results = await run_in_threadpool(
            lambda: [_score_one(service, r, caller, f"{rid}.{n}") for n, r in enumerate(body.instances)])
        return _json({"predictions": results})


MODEL_DIR_ENV = "IDENTIGRAPH_MODEL_DIR"
ACCESS_LOG_ENV = "IDENTIGRAPH_SERVE_ACCESS_LOG"


def _prepare_process(serving: ServingConfig) -> None:
    """Per server process: torch threads (requests are the parallelism) and JSON-lines logs on stderr."""
    import os

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(serving.model_threads)
    threadpool_limits(serving.model_threads)  # numpy's BLAS too: tiny matrices, requests are the parallelism
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))  # the records are JSON already
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    access.disabled = os.environ.get(ACCESS_LOG_ENV) != "1"


def app_from_environment() -> FastAPI:
    """uvicorn's factory for worker processes: each builds its own app from the same files."""
    import os

    from identigraph.config import load_settings
    from identigraph.serving.config import load_serving_config

    serving = load_serving_config()
    _prepare_process(serving)
    return create_app(load_settings(), serving, os.environ.get(MODEL_DIR_ENV) or None)


def run_server(settings_path: Path | None, serving_path: Path | None, model_dir: Path | None, host: str,
               port: int, workers: int = 1, access_log: bool = False) -> None:
    """``identigraph serve``: load and check everything before binding the port, then run uvicorn."""
    import os

    import uvicorn

    from identigraph.config import load_settings
    from identigraph.serving.config import load_serving_config

    # worker processes (and this one) read the same files through the environment
    for name, value in (("IDENTIGRAPH_CONFIG", settings_path), ("IDENTIGRAPH_SERVING_CONFIG", serving_path)):
        if value:
            os.environ[name] = str(value)
    os.environ[MODEL_DIR_ENV] = str(model_dir or "")
    os.environ[ACCESS_LOG_ENV] = "1" if access_log else "0"
    serving, settings = load_serving_config(), load_settings()
    _prepare_process(serving)
    if workers == 1:
        app = create_app(settings, serving, model_dir)
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
        return
    create_app(settings, serving, model_dir).state.service.close()  # fail here, not in every worker
    uvicorn.run("identigraph.serving.app:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_config=None, access_log=False)
