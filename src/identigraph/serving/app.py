"""The HTTP API: admission in front, then one router per audience (``serving.routers``).

``create_app`` wires the pieces: the scoring service, the admission middleware that authenticates and
bounds every request before it costs anything (``serving.guard``), the routers, and the error handlers,
which never echo a request value or an exception's class.
"""


import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from identigraph import logs
from identigraph.config import Settings
from identigraph.errors import ConfigError, IdentigraphError
from identigraph.serving.auth import Authenticator
from identigraph.serving.config import ServingConfig
from identigraph.serving.console import router as console
from identigraph.serving.guard import Admission
from identigraph.serving.routers import identity, ops, problem, safe_errors, sagemaker, scoring
from identigraph.serving.service import ScoringService

log = logging.getLogger("identigraph.serving")
access = logging.getLogger("identigraph.serving.access")
ROUTERS = (scoring, identity, sagemaker, ops, console)  # each: router(service, config) and rules(config)
WORKERS_ENV = "IDENTIGRAPH_SERVE_WORKERS"


async def answer_error(request: Request, exc: Exception) -> JSONResponse:
    """The one error handler of every route: an ``IdentigraphError`` answers with what it carries (status,
    detail, headers), a request that fails its schema with 422 and no echoed value, anything else with a
    500 that names nothing (the exception's class goes to the log only)."""
    if isinstance(exc, IdentigraphError) and exc.status is not None:
        return problem(request, exc.status, exc.detail(), exc.headers())
    if isinstance(exc, RequestValidationError):
        return problem(request, 422, safe_errors(exc.errors()))
    log.error("internal_error", extra={"request_id": getattr(request.state, "request_id", None),
                                       "error": type(exc).__name__})
    return problem(request, 500, "internal error")


def _install_errors(app: FastAPI) -> None:
    # one handler, registered where each kind is caught: FastAPI's own for RequestValidationError must be
    # replaced, and the catch-all for other exceptions lives in the server-error middleware
    for kind in (IdentigraphError, RequestValidationError, Exception):
        app.add_exception_handler(kind, answer_error)


def create_app(settings: Settings, serving_config: ServingConfig, model_dir: Path | str | None = None, *,
               service: ScoringService | None = None, workers: int | None = None, **service_kwargs: Any) -> FastAPI:
    """Build the API. ``model_dir=None`` serves without a model: every decision is a degraded review.

    ``workers``: how many server processes share the configured limits (default: $IDENTIGRAPH_SERVE_WORKERS,
    which ``identigraph serve --workers N`` sets, else 1); this process enforces its share of them."""
    if settings.profile == "production":
        published = [k.id for k in serving_config.api_keys if k.local_only]
        if published:
            raise ConfigError(f"api_keys: {published} are local_only (their key is published); "
                              f"the production profile refuses them")
    workers = workers or int(os.environ.get(WORKERS_ENV) or 1)
    cfg = serving_config.per_worker(workers)
    service = service or ScoringService(settings, cfg, Path(model_dir) if model_dir else None, **service_kwargs)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        import anyio.to_thread

        # room on the thread pool for every request admission lets through, and no more is ever needed
        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            cfg.max_in_flight + cfg.reads.max_in_flight + 8)
        yield
        # off the event loop: the Gremlin driver closes its connections by running a loop of its own
        await run_in_threadpool(service.close)

    app = FastAPI(title="identigraph scoring and identity API", version="1",
                  description="Fraud scores and decisions from the identity graph, and identity reads.",
                  lifespan=lifespan)
    app.state.service = service
    app.state.config = cfg
    app.state.auth = auth = Authenticator(cfg)
    app.add_middleware(Admission, auth=auth, config=cfg, metrics=service.metrics,
                       rules=[rule for module in ROUTERS for rule in module.rules(cfg)])
    _install_errors(app)
    for module in ROUTERS:
        app.include_router(module.router(service, cfg))
    return app


MODEL_DIR_ENV = "IDENTIGRAPH_MODEL_DIR"
ACCESS_LOG_ENV = "IDENTIGRAPH_SERVE_ACCESS_LOG"


def _prepare_process(serving: ServingConfig) -> None:
    """Per server process: torch threads (requests are the parallelism) and JSON-lines logs on stderr."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(serving.model_threads)
    threadpool_limits(serving.model_threads)  # numpy's BLAS too: tiny matrices, requests are the parallelism
    logs.configure(log.name)
    access.disabled = os.environ.get(ACCESS_LOG_ENV) != "1"


def app_from_environment() -> FastAPI:
    """uvicorn's factory for worker processes: each builds its own app from the same files."""
    from identigraph.config import load_settings
    from identigraph.serving import server
    from identigraph.serving.config import load_serving_config

    serving = load_serving_config()
    _prepare_process(serving)
    server.configure(serving)  # this process's protocol: the header deadline
    return create_app(load_settings(), serving, os.environ.get(MODEL_DIR_ENV) or None)


def run_server(settings_path: Path | None, serving_path: Path | None, model_dir: Path | None, host: str,
               port: int, workers: int = 1, access_log: bool = False) -> None:
    """``identigraph serve``: load and check everything before binding the port, then run uvicorn.

    With ``workers`` > 1 each process enforces 1/N of every per-key limit (``ServingConfig.per_worker``)."""
    import uvicorn

    from identigraph.config import load_settings
    from identigraph.serving.config import load_serving_config
    from identigraph.serving.server import uvicorn_options

    # worker processes (and this one) read the same files through the environment
    for name, value in (("IDENTIGRAPH_CONFIG", settings_path), ("IDENTIGRAPH_SERVING_CONFIG", serving_path)):
        if value:
            os.environ[name] = str(value)
    os.environ[MODEL_DIR_ENV] = str(model_dir or "")
    os.environ[ACCESS_LOG_ENV] = "1" if access_log else "0"
    os.environ[WORKERS_ENV] = str(workers)
    serving, settings = load_serving_config(), load_settings()
    _prepare_process(serving)
    options = uvicorn_options(serving)
    if workers == 1:
        app = create_app(settings, serving, model_dir, workers=1)
        uvicorn.run(app, host=host, port=port, **options)
        return
    create_app(settings, serving, model_dir).state.service.close()  # fail here, not in every worker
    uvicorn.run("identigraph.serving.app:app_from_environment", factory=True, host=host, port=port,
                workers=workers, **options)
