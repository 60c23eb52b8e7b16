"""The scoring service behind the routes: one graph fetch → request encoder → seed-only forward → policy.

The model runs in this process on what one bounded traversal (``serving.neighbourhood``) returned, through
the model's own request-path encoder, which the tests hold equal to the batch encoder that training and
``identigraph predict`` use: no network hop to a model endpoint, no second feature definition to drift.
The served model sits behind one reference that a reload replaces only after the new model has loaded
completely, so a request that started on the old model finishes on it and none sees a half-loaded one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from identigraph.config import Settings
from identigraph.errors import GraphError, GraphTimeout, GraphUnavailable, ModelFailure
from identigraph.graph import pseudonym, queries
from identigraph.graph.client import GraphClient, is_connection_error
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import as_utc
from identigraph.graph.schema import CUSTOMER, customer_id
from identigraph.model.request_path import RequestGraph
from identigraph.serving import explain, policy
from identigraph.serving.audit import AuditLog
from identigraph.serving.config import ServingConfig
from identigraph.serving.metrics import ServingMetrics
from identigraph.serving.neighbourhood import Fetched, fetch, identifier_ids
from identigraph.serving.records import connections_for_record, evidence_for_record, identifier_ref
from identigraph.serving.review import QUEUED, ReviewGate, ReviewQueue

log = logging.getLogger("identigraph.serving")
T = TypeVar("T")
UNKNOWN_CUSTOMER = "customer not in the graph and no identifiers given"
NO_MODEL = "no model loaded"
_STATUS_PROPS = ("blocked", "n_blocks", "n_block_reviews", "last_block_reason", "last_block_at", "created_at")


@dataclass(frozen=True)
class ScoreInput:
    """A score request checked and canonicalised, before any graph work: a batch checks all of its items
    first, so a bad item refuses the batch before anything was scored, audited or queued."""

    customer: str
    action: str
    ids: dict[str, str]            # identifier label -> graph vertex id
    explain: bool | None = None


class ServedModel:
    """A loaded model as requests use it: the request encoder, then the seed-only forward, each timed.

    Stateless per request (the request encoder writes only local arrays, inference runs under no_grad and
    explanations use ``torch.autograd.grad``), so concurrent requests share it without a lock.
    """

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.version: str = loaded.version
        self.threshold: float = loaded.threshold
        self.encoder = loaded.encoder
        self.hub_degree: int | None = getattr(loaded.encoder, "hub_degree", None)
        self.customer_props = [c.name for c in loaded.encoder.node_cols.get(CUSTOMER, [])]

    def score(self, graph: RequestGraph, times: dict[str, float]) -> tuple[float, Any, int]:
        """(score, tensors, seed index); ``times`` gets the encoder's and the network's seconds."""
        t0 = time.perf_counter()
        t = self.loaded.request_encoder.transform(graph)
        t1 = time.perf_counter()
        value, i = self.loaded.score_seed(t, graph.seed)
        times["features"], times["model"] = t1 - t0, time.perf_counter() - t1
        return value, t, i

    def explain(self, tensors: Any, i: int, top_k: int) -> dict[str, Any]:
        return self.loaded.explain_tensors(tensors, i, top_k)


class ModelHolder:
    """The served model: one reference, swapped only once the replacement is fully loaded."""

    def __init__(self, metrics: ServingMetrics, loader: Callable[[Path], Any] | None = None) -> None:
        self._current: Any = None
        self._reload_lock = threading.Lock()
        self.metrics = metrics
        self._loader = loader

    @property
    def current(self) -> Any:
        return self._current

    def reload(self, model_dir: Path) -> tuple[str | None, str]:
        """Load ``model_dir`` completely, then swap; returns (previous version, new version)."""
        loader = self._loader
        if loader is None:
            from identigraph.model.artifacts import LoadedModel

            loader = LoadedModel.load
        with self._reload_lock:  # two reloads at once: the last one to finish loading wins, never a mix
            new = ServedModel(loader(Path(model_dir)))
            old = self._current
            self._current = new  # a single reference assignment: atomic for every reader
        old_version = getattr(old, "version", None)
        self.metrics.serving(old_version, new.version)
        self.path = Path(model_dir)
        log.info("model_loaded", extra={"version": new.version, "previous": old_version,
                                        "path": str(model_dir)})
        return old_version, new.version

    def watch(self, interval_s: float, stop: threading.Event) -> threading.Thread:
        """Reload when the served directory holds a new version (a promotion replaced it in place).

        With several worker processes a reload request reaches only one of them; watching the directory
        is how every worker follows a promotion. ``save_model`` replaces a directory by rename, so a
        half-written model is never seen.
        """
        def run() -> None:
            while not stop.wait(interval_s):
                path, current = getattr(self, "path", None), self._current
                if path is None:
                    continue
                try:
                    version = json.loads((path / "metrics.json").read_text()).get("version")
                    if current is not None and version and version != current.version:
                        self.reload(path)
                except Exception as exc:
                    log.warning("model_watch_failed", extra={"path": str(path),
                                                               "error": f"{type(exc).__name__}: {str(exc)[:200]}"})

        thread = threading.Thread(target=run, name="model-watch", daemon=True)
        thread.start()
        return thread


def serving_graph_settings(settings: Settings, config: ServingConfig, reads: bool = False) -> Settings:
    """The platform's graph settings with the serving retry budget: a request cannot wait 12 retries.

    ``reads``: the identity reads' own pool, so that read traffic never waits for, or takes, scoring's."""
    timeout = config.reads.timeout_s if reads else config.graph.timeout_s
    retry = settings.graph.retry.model_copy(update={"attempts": config.graph.retry_attempts,
                                                     "max_backoff_s": min(settings.graph.retry.max_backoff_s,
                                                                          timeout / 4)})
    pool = config.reads.pool_size if reads else config.graph.pool_size
    graph = settings.graph.model_copy(update={"retry": retry, "pool_size": pool})
    return settings.model_copy(update={"graph": graph})


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if isinstance(value, datetime) else value


def _status(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _iso(props.get(k)) for k in _STATUS_PROPS}


def _raw_id(vid: str) -> str:
    return vid[len(CUSTOMER) + 1:] if vid.startswith(CUSTOMER + ":") else vid


class ScoringService:
    """Decisions and identity reads from the graph and the served model, with audit and review queue."""
    def __init__(self, settings: Settings, config: ServingConfig, model_dir: Path | None = None, *,
                 client: GraphClient | None = None, sqs: Any = None, pseudo: Pseudonymiser | None = None,
                 metrics: ServingMetrics | None = None, model_loader: Callable[[Path], Any] | None = None) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics or ServingMetrics()
        self.client = client or GraphClient(serving_graph_settings(settings, config))
        self.read_client = client or GraphClient(serving_graph_settings(settings, config, reads=True))
        self.pseudo = pseudo or pseudonym.from_settings(settings)
        self.models = ModelHolder(self.metrics, model_loader)
        if model_dir is not None:
            self.models.reload(model_dir)  # a model that was asked for and does not load is a startup error
        self.audit = AuditLog(settings.data_path / config.audit_file)
        self.gate = ReviewGate(config.review)
        self.review: ReviewQueue | None = None
        if config.review_queue:
            if sqs is None:
                from identigraph.etl.publish import sqs_client

                sqs = sqs_client(settings)
            self.review = ReviewQueue(sqs, settings.queues.review, self.metrics,
                                      settings.data_path / config.review.unsent_file, config.review.send_attempts)
        self._stop = threading.Event()
        if config.model_watch_s:
            self.models.watch(config.model_watch_s, self._stop)

    def close(self) -> None:
        self._stop.set()
        if self.review is not None:
            self.review.close()
        self.audit.close()
        self.client.close()
        if self.read_client is not self.client:
            self.read_client.close()

    # ---- plumbing ------------------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str, times: dict[str, float]) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    def graph_call(self, fn: Callable[[float], T], timeout_s: float | None = None) -> T:
        """Run ``fn(deadline)``, graph reads that pass the deadline to every request they make.

        The deadline travels with each request as the server's ``evaluationTimeout`` and bounds the wait
        here, so a request past it stops on the server as well as in the caller: an overload cannot pile up
        seconds of queued graph work behind answers nobody waits for. Failures and timeouts become
        ``GraphUnavailable`` (scores degrade to a review, reads answer 503).
        """
        timeout_s = timeout_s or self.config.graph.timeout_s
        try:
            return fn(time.monotonic() + timeout_s)
        except GraphTimeout:
            self.metrics.graph_failures.labels(kind="timeout").inc()
            raise GraphUnavailable(f"graph did not answer within {timeout_s:g}s") from None
        except Exception as exc:
            if not (isinstance(exc, GraphError) or is_connection_error(exc)):
                raise
            self.metrics.graph_failures.labels(kind="error").inc()
            raise GraphUnavailable("graph unavailable") from exc  # the exception's class is for logs only

    def graph_reachable(self) -> bool:
        try:
            self.graph_call(lambda deadline: self.client.submit(lambda g: g.inject(1), "next", deadline=deadline))
            return True
        except GraphUnavailable:
            return False

    def as_of(self) -> datetime:
        return self.config.as_of or datetime.now(timezone.utc)

    # ---- scoring -------------------------------------------------------------------------------------
    def prepare(self, customer: str, action: str | None, identifiers: Mapping[str, str | None] | None,
                explain_model: bool | None = None) -> ScoreInput:
        """Check and canonicalise one request; raises SchemaError naming the field (the routes answer 422)."""
        ids = identifier_ids(identifiers or {}, self.pseudo)
        return ScoreInput(customer, action or self.config.default_action, ids, explain_model)

    def score(self, customer: str, action: str | None, identifiers: Mapping[str, str | None] | None,
              caller: str, request_id: str, explain_model: bool | None = None, detail: bool = False) -> dict[str, Any]:
        return self.decide(self.prepare(customer, action, identifiers, explain_model), caller, request_id, detail)

    def decide(self, req: ScoreInput, caller: str, request_id: str, detail: bool = False) -> dict[str, Any]:
        """One decision, written to the audit log (and, when the review gate admits it, the review queue)
        before it returns. ``detail``: the caller may read identities, so the response carries the evidence
        (identifier ids, their counts) and the model's attributions; otherwise decision and reasons only.

        Raises ModelFailure when the model fails on valid input (the routes answer 500 naming the model).
        """
        cfg = self.config
        times: dict[str, float] = {}
        customer, action, ids = req.customer, req.action, req.ids
        model = self.models.current  # this request's model, whatever a reload does meanwhile
        as_of = self.as_of()
        naive_as_of = as_of.astimezone(timezone.utc).replace(tzinfo=None)  # as gremlinpython returns dates
        missing: list[str] = []
        found: Fetched | None = None
        score: float | None = None
        tensors = None
        cap = (model.hub_degree if model is not None and model.hub_degree else None) or cfg.neighbourhood.fanout_cap
        props = model.customer_props if model is not None else []
        try:
            with self._stage("graph", times):
                found = self.graph_call(lambda deadline: fetch(
                    self.client, customer, ids, props, cap, cfg.neighbourhood.max_links, naive_as_of, action,
                    deadline))
        except GraphUnavailable as exc:
            missing.append(str(exc))
        if found is not None and not found.known and not ids:
            missing.append(UNKNOWN_CUSTOMER)
        if model is None:
            missing.append(NO_MODEL)
        elif found is not None and not missing:
            score, tensors, seed_index = self._model_call(model, lambda: model.score(found.graph, times))
        with self._stage("policy", times):
            evidence = explain.evidence(found) if found else []
            seed_props = found.graph.vertices[found.graph.seed][1] if found else {}
            ltv = seed_props.get("lifetime_value")
            facts = policy.Facts(score=score, lifetime_value=None if ltv is None else float(ltv),
                                 blocked_on_identifier=explain.blocked_on_identifier(evidence),
                                 missing=tuple(missing))
            threshold = cfg.policy.threshold if cfg.policy.threshold is not None else getattr(model, "threshold", 1.0)
            verdict = policy.decide(facts, cfg.policy, threshold)
            # what a fired rule rests on leads the evidence, whatever else is shared more widely
            fired = {r.identifier: r.min_blocked for r in cfg.policy.hard_rules if r.name in verdict.rules}
            evidence.sort(key=lambda e: e["blocked"] < fired.get(e["identifier_label"], float("inf")))
        case = None
        if verdict.decision == "review" and self.review is not None:
            case = self.gate.admit(customer, verdict.degraded)
            self.metrics.review_cases.labels(outcome=case).inc()
        attribution = None
        wants_model = req.explain if req.explain is not None else (
            cfg.explain.model_attribution == "always"
            or (cfg.explain.model_attribution == "flagged" and verdict.decision != "allow"))
        # attributions are identifier-level too: computed for callers who see them and for queued cases
        if tensors is not None and wants_model and cfg.explain.model_attribution != "never" and (detail or case == QUEUED):
            with self._stage("explain", times):
                attribution = explain.model_attribution(
                    self._model_call(model, lambda: model.explain(tensors, seed_index, cfg.explain.top_k)),
                    cfg.explain.top_k)
        top = evidence[: cfg.explain.top_k]
        graph = found.graph if found else None
        result = {
            "customer_id": customer,
            "score": None if score is None else round(score, 6),
            "decision": verdict.decision,
            "reasons": verdict.public_reasons,
            "model_version": getattr(model, "version", None),
            "degraded": verdict.degraded,
            "known_customer": bool(found and found.known),
            "request_id": request_id,
            "rules": verdict.rules,
            "threshold": None if model is None and cfg.policy.threshold is None else threshold,
            "neighbourhood": None,
            "explanation": None,
        }
        if detail:
            shared = [e["text"] for e in evidence if e["customers_total"] > 1][: cfg.explain.top_k]
            result["reasons"] = verdict.reasons + shared
            result["explanation"] = {"evidence": top, **(attribution or {})}
            if found is not None and graph is not None:
                result["neighbourhood"] = {
                    "customers": sum(label == CUSTOMER for label, _ in graph.vertices.values()),
                    "identifiers": sum(label != CUSTOMER for label, _ in graph.vertices.values()),
                    "capped_identifiers": len(found.hubs), "customer_cap_reached": found.links_capped}
        self._record(result, req, verdict, top, evidence, attribution, case, caller, times, facts.lifetime_value)
        return result

    def _model_call(self, model: Any, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            log.error("model_failed", extra={"version": model.version, "error": type(exc).__name__,
                                             "detail": str(exc)[:300]})
            raise ModelFailure(model.version) from exc

    def _record(self, result: dict[str, Any], req: ScoreInput, verdict: policy.Verdict, top: list[dict[str, Any]],
                evidence: list[dict[str, Any]], attribution: dict[str, Any] | None, case: str | None, caller: str,
                times: dict[str, float], lifetime_value: float | None = None) -> None:
        m = self.metrics
        for stage, seconds in times.items():
            m.stage.labels(stage=stage).observe(seconds)
        if result["neighbourhood"]:
            m.neighbourhood.observe(result["neighbourhood"]["customers"])
        m.decisions.labels(decision=result["decision"], degraded=str(result["degraded"]).lower()).inc()
        ref = lambda vid: identifier_ref(self.pseudo, vid)  # noqa: E731
        now = datetime.now(timezone.utc)
        self.audit.write({
            "ts": now.isoformat(timespec="milliseconds"),
            "request_id": result["request_id"], "api_key_id": caller, "customer_id": result["customer_id"],
            "known_customer": result["known_customer"], "action": req.action,
            "identifiers_given": sorted(ref(v) for v in req.ids.values()),
            "decision": result["decision"], "score": result["score"], "threshold": result["threshold"],
            "model_version": result["model_version"], "degraded": result["degraded"], "rules": result["rules"],
            "reasons": verdict.reasons,
            "evidence": [{"identifier_ref": ref(e["identifier_id"]), "label": e["identifier_label"],
                          "customers_total": e["customers_total"], "blocked": e["blocked"]} for e in top],
            "review_case": case, "timings_ms": {k: round(v * 1000, 2) for k, v in times.items()},
        })
        if case == QUEUED:
            shown = evidence_for_record(top, self.pseudo)
            shared = [e["text"] for e in evidence_for_record(
                [e for e in evidence if e["customers_total"] > 1][: self.config.explain.top_k], self.pseudo)]
            self.review.submit({  # type: ignore[union-attr]
                **{k: result[k] for k in ("request_id", "customer_id", "decision", "score", "model_version",
                                          "degraded", "rules")},
                "reasons": verdict.reasons + shared,
                "explanation": {"evidence": shown,
                                "connections": connections_for_record((attribution or {}).get("connections"),
                                                                      self.pseudo),
                                "features": (attribution or {}).get("features")},
                "api_key_id": caller, "action": req.action, "ts": now.isoformat(),
                "lifetime_value": lifetime_value,  # the review console's queue sorts and filters on it
                "model_attribution": attribution is not None,
            })

    # ---- reads ---------------------------------------------------------------------------------------
    def identity(self, customer: str) -> dict[str, Any] | None:
        vid = customer_id(customer)

        def read(deadline: float) -> tuple[Any, list[dict[str, Any]]]:
            props = self.read_client.submit(lambda g: g.V(vid).element_map(), "one_or_none", deadline=deadline)
            return props, (queries.customer_identity(self.read_client, customer, deadline) if props else [])

        props, edges = self.graph_call(read, self.config.reads.timeout_s)
        if props is None:
            return None
        identifiers = [{"identifier_id": e["identifier_id"], "identifier_label": e["identifier_label"],
                        **{k: _iso(v) for k, v in e.items() if k not in ("edge_id", "label", "customer_id",
                                                                         "identifier_id", "identifier_label")}}
                       for e in edges]
        return {"customer_id": customer, "status": _status({k: v for k, v in props.items() if isinstance(k, str)}),
                "identifiers": identifiers}

    def connections(self, customer: str, depth: int) -> dict[str, Any] | None:
        caps = self.config.neighbourhood
        hood = self.graph_call(lambda deadline: queries.neighbourhood(
            self.read_client, [customer], hops=depth, fanout_cap=caps.fanout_cap, max_customers=caps.max_customers,
            deadline=deadline), self.config.reads.timeout_s)
        seed = customer_id(customer)
        if seed not in hood.vertices:
            return None
        # breadth-first over the bipartite edges: a customer's depth is how many shared identifiers away it is
        by_customer: dict[str, list[str]] = {}
        by_identifier: dict[str, list[str]] = {}
        for e in hood.edges.values():
            by_customer.setdefault(e["customer_id"], []).append(e["identifier_id"])
            by_identifier.setdefault(e["identifier_id"], []).append(e["customer_id"])
        level: dict[str, int] = {seed: 0}
        via: dict[str, set[str]] = {}
        frontier = [seed]
        for d in range(1, depth + 1):
            nxt = []
            for c in frontier:
                for ident in by_customer.get(c, []):
                    for other in by_identifier.get(ident, []):
                        if other not in level:
                            level[other], via[other] = d, set()
                            nxt.append(other)
                        if level[other] == d:
                            via[other].add(ident)
            frontier = nxt
        customers = [{"customer_id": _raw_id(c), "depth": level[c], "via": sorted(via[c]),
                      "status": _status(hood.vertices.get(c, {}))}
                     for c in sorted(level, key=lambda c: (level[c], c)) if c != seed]
        own = sorted(set(by_customer.get(seed, [])))
        identifiers = [{"identifier_id": i, "identifier_label": hood.vertices.get(i, {}).get("label", i.split(":")[0]),
                        "customers_total": int(hood.identifier_degree.get(i, len(by_identifier.get(i, [])))),
                        "capped": i in hood.truncated_identifiers} for i in own]
        return {"customer_id": customer, "depth": depth, "identifiers": identifiers, "customers": customers,
                "customer_cap_reached": hood.truncated_by_node_cap}
