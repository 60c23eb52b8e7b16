"""SageMaker hosting (and so Redshift ML): ``GET /ping`` and ``POST /invocations`` (JSON or CSV of ids).

These callers want scores, so an answer without one is not an answer: when any item has no score the
call fails — 503 with ``Retry-After`` when the graph or the model is out, 404 naming the lines when the
graph answered but does not know those customers — instead of a 200 with blank lines. Like a batch, a
call is checked whole before anything is scored and costs one rate-limit token per item.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from identigraph.serving import schemas as s
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.guard import SCORING, Rule
from identigraph.serving.routers import (
    RESPONSES,
    _api_key,
    _bearer,
    charge,
    json_response,
    problem,
    require,
    safe_errors,
    sees_identities,
)
from identigraph.serving.routers.scoring import batch_models, prepare_all
from identigraph.serving.service import NO_MODEL, UNKNOWN_CUSTOMER, ScoringService

_CUSTOMER_ID = re.compile(s.CUSTOMER_ID)


def rules(cfg: ServingConfig) -> list[Rule]:
    """Behind SageMaker's IAM the endpoint may be open (invocations_open); otherwise it needs the score scope."""
    return [Rule("/invocations", None if cfg.invocations_open else "score", SCORING)]


def _unanswered(request: Request, results: list[dict[str, Any]], lines: bool) -> Response | None:
    """None when every item has a score; else the 503 (outage) or 404 (unknown customers) to answer."""
    missing = [i for i, r in enumerate(results) if r["score"] is None]
    if not missing:
        return None
    unknown = all(results[i]["reasons"][:1] == [UNKNOWN_CUSTOMER] and NO_MODEL not in results[i]["reasons"]
                  for i in missing)
    where = f"lines {[i + 1 for i in missing][:10]}" if lines else f"instances {missing[:10]}"
    if unknown:
        return problem(request, 404, f"{where}: customers not in the graph (and no identifiers given): no score")
    reason = next(r for r in (results[i]["reasons"][0] for i in missing) if r != UNKNOWN_CUSTOMER)
    return problem(request, 503, f"{len(missing)} of {len(results)} items have no score ({reason}); "
                                 f"nothing partial is returned", {"Retry-After": "1"})


def router(service: ScoringService, cfg: ServingConfig) -> APIRouter:
    """SageMaker's ping and invocations, with their bodies' bounds stated in the OpenAPI schema."""
    api = APIRouter(tags=["sagemaker"])
    _, InvocationsJson = batch_models(cfg.max_batch)

    @api.get("/ping", responses={503: {"description": "no model loaded"}})
    def ping() -> JSONResponse:
        """SageMaker's health check: 200 once a model is loaded."""
        model = service.models.current
        return JSONResponse({"model_version": getattr(model, "version", None)}, status_code=200 if model else 503)

    # a customer id with a letter in it (so never a phone number), at most 128 characters: stricter than the
    # parser below, so a line the schema allows is never refused
    line = r'[ \t]*"?(?:[A-Za-z]|[0-9][0-9_.:-]{0,62}[A-Za-z])[A-Za-z0-9_.:-]{0,64}"?[ \t]*'
    invocations_body = {
        "required": True,
        "content": {
            "application/json": {"schema": InvocationsJson.model_json_schema(
                ref_template="#/components/schemas/{model}")},
            "text/csv": {"schema": {"type": "string", "description": "one customer id per line",
                                    "pattern": rf"^({line}\r?\n){{0,{cfg.max_batch - 1}}}{line}\r?\n?$"}},
        },
    }

    def caller(request: Request, key: str | None = Security(_api_key),
               bearer: HTTPAuthorizationCredentials | None = Security(_bearer)) -> ApiKey | None:
        return None if cfg.invocations_open else require("score")(request, key, bearer)

    @api.post("/invocations", openapi_extra={"requestBody": invocations_body},
              responses={**RESPONSES, 404: {"model": s.Problem}, 200: {"content": {"application/json": {}, "text/csv": {}},
                                            "description": "JSON predictions, or one score per line for text/csv"}})
    async def invocations(request: Request, key: ApiKey | None = Depends(caller)) -> Response:
        """JSON ``{"instances": [...]}``, or CSV with one customer id per line; every item gets a score or
        the call fails (503 during an outage, 404 for customers the graph does not know)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await request.body()  # admission has bounded its size and the time it took
        rid = request.state.request_id
        who = key.id if key is not None else "sagemaker"
        if ctype == "text/csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return problem(request, 422, "text/csv body is not UTF-8")
            rows = text.splitlines()
            long = [n for n, row in enumerate(rows, 1) if len(row) > cfg.http.max_csv_line]
            if long:
                return problem(request, 422, f"text/csv: lines {long[:5]} are longer than {cfg.http.max_csv_line} "
                                             f"characters (http.max_csv_line)")
            ids = [i for i in (row.strip().strip('"').strip() for row in rows) if i]
            if not ids:
                return problem(request, 422, "text/csv: one customer id per line, none found")
            if len(ids) > cfg.max_batch:
                return problem(request, 413, f"{len(ids)} lines; at most {cfg.max_batch} per call (max_batch)")
            bad = [n for n, i in enumerate(ids, 1) if not _CUSTOMER_ID.match(i) or s.looks_like_contact(i)]
            if bad:
                return problem(request, 422, f"text/csv: lines {bad[:5]} are not customer ids")
            inputs = [service.prepare(c, None, None) for c in ids]
            charge(request, key, len(inputs))
            results = await run_in_threadpool(
                lambda: [service.decide(x, who, f"{rid}.{n}") for n, x in enumerate(inputs)])
            refused = _unanswered(request, results, lines=True)
            if refused is not None:
                return refused
            return PlainTextResponse("".join(f"{r['score']:.6f}\n" for r in results), media_type="text/csv")
        if ctype != "application/json":
            return problem(request, 415, "content type must be application/json or text/csv")
        try:
            body = InvocationsJson.model_validate_json(raw)
        except ValidationError as exc:
            return problem(request, 422, safe_errors(exc.errors()))
        inputs, errors = prepare_all(service, body.instances, "instances")
        if errors:
            return problem(request, 422, errors)
        charge(request, key, len(inputs))
        detail = sees_identities(key)
        results = await run_in_threadpool(
            lambda: [service.decide(x, who, f"{rid}.{n}", detail) for n, x in enumerate(inputs)])
        refused = _unanswered(request, results, lines=False)
        return refused if refused is not None else json_response({"predictions": results})

    return api
