"""``POST /v1/score`` and ``/v1/score:batch``: decisions for the teams that score their customers.

A scoring-only key gets the decision, the score and the reasons; the evidence behind them (which
identifiers, how many accounts share each) is identity data and goes to keys that may read identities.
A batch is checked whole before anything is scored — a refused batch has scored, audited and queued
nothing, and the error names every bad item's index — and it costs one rate-limit token per item.
"""


from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from pydantic import Field, create_model

from identigraph.errors import SchemaError
from identigraph.serving import schemas as s
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.guard import SCORING, Rule
from identigraph.serving.routers import RESPONSES, charge, json_response, problem, require, sees_identities
from identigraph.serving.service import ScoreInput, ScoringService


def rules(cfg: ServingConfig) -> list[Rule]:
    """Scoring needs the score scope and takes the scoring capacity."""
    return [Rule("/v1/score", "score", SCORING), Rule("/v1/score:batch", "score", SCORING)]


class Batch(s._Body):
    """A batch body's shape for the code; ``batch_models`` adds the configured bound for the schema."""

    requests: list[s.ScoreRequest]


class Invocations(s._Body):
    """SageMaker's JSON body's shape for the code; ``batch_models`` adds the configured bound."""

    instances: list[s.ScoreRequest]


def batch_models(limit: int) -> tuple[type[Batch], type[Invocations]]:
    """Batch bodies whose schema states the configured bound, so clients (and schemathesis) know it."""
    items = Field(min_length=1, max_length=limit, description=f"at most {limit} (max_batch)")
    batch = create_model("BatchRequest", __base__=Batch, requests=(list[s.ScoreRequest], items))
    invocations = create_model("InvocationsJson", __base__=Invocations, instances=(list[s.ScoreRequest], items))
    return batch, invocations


def prepare_all(service: ScoringService, items: list[s.ScoreRequest], where: str) -> tuple[list[ScoreInput], list]:
    """(inputs, errors): every item checked and canonicalised; errors name each bad item's index and field."""
    inputs, errors = [], []
    for i, r in enumerate(items):
        try:
            inputs.append(service.prepare(r.customer_id, r.action, r.identifiers.model_dump() if r.identifiers
                                          else None, r.explain))
        except SchemaError as exc:  # names the field, never the value
            errors.append(exc.problem("body", where, i, "identifiers"))
    return inputs, errors


def router(service: ScoringService, cfg: ServingConfig) -> APIRouter:
    """The scoring routes, with the batch bound from the config in their schema."""
    api = APIRouter(tags=["scoring"])
    BatchRequest, _ = batch_models(cfg.max_batch)

    @api.post("/v1/score", response_model=s.ScoreResponse, responses=RESPONSES)
    def score(body: s.ScoreRequest, request: Request, key: ApiKey = Depends(require("score"))) -> Any:
        """Score a customer (or a signup not yet in the graph, from its identifiers) and decide.

        A decision is always answered: with the graph or the model down it is a degraded review
        (``score`` null, ``degraded`` true), never a block."""
        inputs, errors = prepare_all(service, [body], "requests")
        if errors:
            return problem(request, 422, [{**e, "loc": ["body", "identifiers", e["loc"][-1]]} for e in errors])
        return json_response(service.decide(inputs[0], key.id, request.state.request_id, sees_identities(key)))

    @api.post("/v1/score:batch", response_model=s.BatchResponse, responses=RESPONSES)
    # a model built at run time with the configured bound; FastAPI reads the annotation at run time, mypy cannot
    def score_batch(body: BatchRequest, request: Request,  # type: ignore[valid-type]
                    key: ApiKey = Depends(require("score"))) -> Any:
        """Up to ``max_batch`` score requests in one call, answered in order; one rate-limit token each."""
        inputs, errors = prepare_all(service, cast(Batch, body).requests, "requests")
        if errors:
            return problem(request, 422, errors)
        charge(request, key, len(inputs))
        rid, detail = request.state.request_id, sees_identities(key)
        return json_response({"results": [service.decide(x, key.id, f"{rid}.{i}", detail)
                                           for i, x in enumerate(inputs)]})

    return api
