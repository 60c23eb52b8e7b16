"""Schemathesis over the API's own OpenAPI schema: generated requests never get a 5xx, and every response
matches what the schema promises. Kept short (a few examples per operation) — it runs against the real
graph and model, where each call costs tens of milliseconds."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples

from test_serving_api import (  # noqa: F401 — fixtures shared with the API tests
    ADMIN, serving_config, serving_model, serving_world, world_counts, world_graph)
from identigraph.serving.app import create_app

pytestmark = pytest.mark.services


def test_no_server_errors_and_responses_match_the_schema(settings, serving_model, world_graph, tmp_path):
    # each operation's strategy driven by hypothesis directly: schemathesis' pytest plugin (from_fixture)
    # does not run under pytest 9, and the app needs session fixtures, so it cannot be built at import
    app = create_app(settings, serving_config(tmp_path, max_batch=3), serving_model[0])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tried = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @examples(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            def run(case) -> None:
                case.call_and_validate(headers=ADMIN)

            run()
            tried.append(operation.label)
    finally:
        app.state.service.close()
    assert {"POST /v1/score", "POST /v1/score:batch", "POST /invocations",
            "GET /v1/customers/{customer_id}/identity", "GET /v1/customers/{customer_id}/connections"} <= set(tried)
