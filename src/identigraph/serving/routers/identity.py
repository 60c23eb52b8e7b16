"""``GET /v1/customers/{id}/identity`` and ``.../connections``: identity reads for fraud operations.

Reads run on their own graph pool with their own deadline and their own bound on requests at once
(``reads``), and cost rate-limit tokens by what they read (``costs``: a depth-2 connections read touches
the identifiers of every customer one hop away), so a busy reader slows itself down, never scoring.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from identigraph.serving import schemas as s
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.guard import READ, Rule
from identigraph.serving.routers import RESPONSES, charge, problem, require
from identigraph.serving.service import ScoringService


def rules(cfg: ServingConfig) -> list[Rule]:
    """Identity reads need the identity:read scope and take the reads' own capacity, not scoring's."""
    return [Rule("/v1/customers/", "identity:read", READ, prefix=True)]


def router(service: ScoringService, cfg: ServingConfig) -> APIRouter:
    """The identity read routes, on the reads' own graph pool and deadline."""
    api = APIRouter(tags=["identity"])
    responses = {**RESPONSES, 404: {"model": s.Problem}}

    @api.get("/v1/customers/{customer_id}/identity", response_model=s.IdentityResponse, responses=responses)
    def identity(request: Request, customer_id: str = s.customer_path(),
                 key: ApiKey = Depends(require("identity:read"))) -> Any:
        """The customer's identifiers (emails and phones pseudonymised) with first/last seen and counts."""
        charge(request, key, cfg.costs.identity)
        found = service.identity(customer_id)
        return found if found is not None else problem(request, 404, "customer not in the graph")

    @api.get("/v1/customers/{customer_id}/connections", response_model=s.ConnectionsResponse, responses=responses)
    def connections(request: Request, customer_id: str = s.customer_path(),
                    depth: int = Query(1, ge=1, le=2, description="1: shares an identifier; 2: through one more"),
                    key: ApiKey = Depends(require("identity:read"))) -> Any:
        """Customers sharing the customer's identifiers (capped per identifier), with their block status.

        Costs ``costs.connections_depth_1`` or ``costs.connections_depth_2`` rate-limit tokens."""
        charge(request, key, cfg.costs.connections_depth_2 if depth == 2 else cfg.costs.connections_depth_1)
        found = service.connections(customer_id, depth)
        return found if found is not None else problem(request, 404, "customer not in the graph")

    return api
