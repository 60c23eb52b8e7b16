"""Operations: liveness, readiness, metrics, and the admin's model reload.

A reload loads only directories under ``models_root`` (symlinks resolved before the check, so a link
inside the root cannot point at ``/etc``), logs every attempt with its outcome and the caller, and never
answers with an exception's class or text: those are in the log, for whoever may read it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from identigraph.errors import SchemaError
from identigraph.serving import schemas as s
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.guard import ADMIN, Rule
from identigraph.serving.routers import RESPONSES, problem, require
from identigraph.serving.service import ScoringService

log = logging.getLogger("identigraph.serving")


def rules(cfg: ServingConfig) -> list[Rule]:
    """Only the admin routes are guarded: health and metrics must answer whatever the load."""
    return [Rule("/v1/admin/", "model:admin", ADMIN, prefix=True)]


def models_root(service: ScoringService) -> Path:
    """The one directory reloads may load from, resolved so a symlink cannot lead outside it."""
    root = service.config.models_root
    return (root if root.is_absolute() else service.settings.data_path / root).resolve()


def router(service: ScoringService, cfg: ServingConfig) -> APIRouter:
    """Liveness, readiness, metrics and the admin's model reload."""
    api = APIRouter(tags=["ops"])

    # health and metrics run on the event loop, not the thread pool: they must answer while scoring saturates it
    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. No dependency is checked (a graph outage must not restart us)."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "model missing or graph unreachable"}})
    def readyz() -> JSONResponse:
        model = service.models.current
        graph = service.graph_reachable()
        body = {"model_version": getattr(model, "version", None), "graph": "reachable" if graph else "unreachable"}
        ok = model is not None and graph
        return JSONResponse({"status": "ready" if ok else "not ready", **body}, status_code=200 if ok else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post("/v1/admin/model:reload", response_model=s.ReloadResponse,
              responses={**RESPONSES, 404: {"model": s.Problem}, 409: {"model": s.Problem}})
    def reload(body: s.ReloadRequest, request: Request, key: ApiKey = Depends(require("model:admin"))) -> Any:
        """Load a model directory under ``models_root`` fully, then switch to it; requests in flight finish
        on the old one."""
        serving = getattr(service.models.current, "version", None)
        root = models_root(service)
        given = Path(body.model_dir)
        target = given if given.is_absolute() else root / given

        def outcome(status: int, result: str, **more: Any) -> None:
            log.info("model_reload", extra={"by": key.id, "request_id": request.state.request_id,
                                            "path": body.model_dir, "status": status, "outcome": result, **more})

        try:
            resolved = target.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            resolved = None
        if resolved is None or not resolved.is_relative_to(root):
            outcome(403, "refused: outside the models root", models_root=str(root))
            return problem(request, 403, f"model_dir must be a directory under the models root ({root}, "
                                         f"models_root); still serving {serving}")
        if not resolved.is_dir():
            outcome(404, "no such directory")
            return problem(request, 404, f"no model directory at {body.model_dir}; still serving {serving}")
        try:
            previous, version = service.models.reload(target)  # the path as given: a stage link is followed
        except (SchemaError, OSError) as exc:
            outcome(404, "not a model directory", error=type(exc).__name__, detail=str(exc)[:300])
            return problem(request, 404, f"{body.model_dir} is not a model directory (model.pt, encoder.json, "
                                         f"metrics.json); still serving {serving}")
        except Exception as exc:
            outcome(409, "did not load", error=type(exc).__name__, detail=str(exc)[:300])
            return problem(request, 409, f"the model at {body.model_dir} did not load (the reason is in the "
                                         f"server's log); still serving {serving}")
        outcome(200, "loaded", version=version, previous=previous)
        return {"previous_version": previous, "version": version}

    return api
