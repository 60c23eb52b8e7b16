"""Prometheus metrics of the API, on a registry of its own (one per app: tests build several apps).

Stage timings are what the load benchmark breaks latency down by: when p99 moves, they say whether the
graph, the feature code or the network moved it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# request latency is judged against 50-100 ms targets: resolve that range finely
_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGES = ("graph", "features", "model", "policy", "explain")


class ServingMetrics:
    """The API's Prometheus series, on a registry per app so tests and workers do not share counters."""
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("identigraph_serving_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("identigraph_serving_request_seconds", "request latency by route", ["route"],
                                 buckets=_BUCKETS, registry=r)
        self.stage = Histogram("identigraph_serving_stage_seconds",
                               "time per scoring stage: graph fetch, features (request encoder), "
                               "model (seed-only forward), policy (+ evidence), explain", ["stage"],
                               buckets=_BUCKETS, registry=r)
        self.decisions = Counter("identigraph_serving_decisions", "decisions by outcome",
                                 ["decision", "degraded"], registry=r)
        self.graph_failures = Counter("identigraph_serving_graph_failures", "graph fetches that failed or timed out",
                                      ["kind"], registry=r)
        self.review_cases = Counter(
            "identigraph_serving_review_cases", "review decisions by what became of their case: queued (to the "
            "sender), duplicate, over_budget, degraded_not_queued; then sent, or unsent (kept in review.unsent_file)",
            ["outcome"], registry=r)
        self.review_pending = Gauge("identigraph_serving_review_pending", "review cases waiting to be sent",
                                    registry=r)
        self.refusals = Counter("identigraph_serving_refusals", "requests refused at admission, by reason",
                                ["reason"], registry=r)
        self.neighbourhood = Histogram("identigraph_serving_neighbourhood_customers",
                                       "customers in a scored neighbourhood", registry=r,
                                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000))
        self.model_version = Gauge("identigraph_serving_model_info", "1 for the model version being served",
                                   ["version"], registry=r)
        self.in_flight = Gauge("identigraph_serving_in_flight", "requests being handled", registry=r)

    def serving(self, old: str | None, new: str | None) -> None:
        if old:
            self.model_version.labels(version=old).set(0)
        if new:
            self.model_version.labels(version=new).set(1)
