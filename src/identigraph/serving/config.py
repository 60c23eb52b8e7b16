"""The serving configuration (``serving.yaml``): who may call, how fast, and how scores become decisions.

Kept apart from the platform tree (``config.Settings``) because it changes on a different rhythm and by
different people: fraud operations tune thresholds and rules, platform teams add API keys, and neither
should need a redeploy of the graph or the stream. Same discipline as the platform tree: every key typed,
unknown keys are errors that name the key, because a mistyped threshold silently falling back to a default
is how a fraud service ends up blocking (or allowing) everybody. Read like every other configuration
(``identigraph.config_loader``): ``--serving-config``, ``$IDENTIGRAPH_SERVING_CONFIG`` or the packaged
default, then ``IDENTIGRAPH_SERVING__SECTION__KEY`` variables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from identigraph.config_loader import SERVING, FrozenModel, load_config, packaged_default
from identigraph.graph.schema import IDENTITY_EVENT_TYPES
from identigraph.serving.console.config import ConsoleConfig

DEFAULT_SERVING_CONFIG = packaged_default(SERVING.default_file)

Scope = Literal["score", "identity:read", "model:admin", "review"]
Decision = Literal["allow", "review", "block"]
IdentifierLabel = Literal["device", "ip", "email", "phone", "card"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RateLimit(FrozenModel):
    """Token bucket: ``per_second`` sustained, ``burst`` at once (a team's retry storm stays its own problem)."""

    per_second: float = Field(50.0, gt=0, le=100_000)
    burst: int = Field(100, ge=1, le=1_000_000)


class ApiKey(FrozenModel):
    """One consuming team's key. Only the SHA-256 of the key is stored: the config file is not a secret.

    ``rate_limit`` counts scorings (a batch of 50 costs 50 tokens) and identity reads by their cost
    (``costs``); ``max_concurrent`` bounds the key's requests at once, from the moment its headers are in
    (so a key's own slow or stuck clients hold its slots, nobody else's)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                    description="names the caller in the audit log and metrics")
    sha256: str = Field(description="hex SHA-256 of the key (python -m identigraph.serving.auth < keyfile)")
    scopes: list[Scope] = Field(min_length=1)
    rate_limit: RateLimit = RateLimit()
    max_concurrent: int = Field(16, ge=1, le=10_000, description="this key's requests at once; more get a fast 429")
    local_only: bool = Field(False, description="a key whose plaintext is published (demo): refused in production")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hex characters (the SHA-256 of the key), never the key itself")
        return value


class HardRule(FrozenModel):
    """A graph fact that forces a decision up whatever the model says (the rules fraud teams already trust).

    "Shares a device with >= 2 blocked accounts" is ``identifier: device, min_blocked: 2``. ``at_least:
    block`` still yields to the lifetime-value boundary: a high-value customer is never blocked automatically.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    identifier: IdentifierLabel
    min_blocked: int = Field(ge=1, description="blocked other customers on one identifier of this kind")
    at_least: Literal["review", "block"] = "review"


class PolicyConfig(FrozenModel):
    """How a score becomes allow, review or block: fraud operations tune this, not the model."""

    threshold: float | None = Field(None, ge=0.0, le=1.0,
                                    description="score at or above it is fraud; null: the model's own threshold")
    lifetime_value_boundary: float = Field(
        200.0, ge=0, description="fraud below this lifetime value is blocked automatically, at or above it reviewed")
    hard_rules: list[HardRule] = Field(default_factory=list)

    @field_validator("hard_rules")
    @classmethod
    def _unique_names(cls, rules: list[HardRule]) -> list[HardRule]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {dupes}")
        return rules


class NeighbourhoodCaps(FrozenModel):
    """Bounds of the graph reads. Scoring fetches each identifier's customers only up to the model's own
    ``hub_degree`` (what it was trained to see; ``fanout_cap`` for a model without one) and at most
    ``max_links`` of the customer's links; ``hops``/``fanout_cap``/``max_customers`` bound the connections read."""

    hops: int = Field(2, ge=1, le=2)
    fanout_cap: int = Field(50, ge=1, le=1000)
    max_customers: int = Field(300, ge=1, le=5000)
    max_links: int = Field(100, ge=1, le=1000, description="a scored customer's links read at most")


class GraphAccess(FrozenModel):
    """How long a request may wait for the graph before it is answered degraded (review, never block)."""

    timeout_s: float = Field(1.0, gt=0, le=30)
    retry_attempts: int = Field(2, ge=1, le=10, description="replaces graph.retry.attempts for serving")
    pool_size: int = Field(8, ge=1, le=64)


class HttpLimits(FrozenModel):
    """What a connection may cost before and while it is authenticated: bounded bytes and bounded time.

    The key is checked as soon as the headers are in, before a byte of the body is read; bodies are capped
    (``Content-Length`` above the cap is refused unread, a chunked body when it passes it) and must arrive
    within ``body_timeout_s``; a connection whose request line and headers take longer than
    ``header_timeout_s`` is closed."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1024 * 1024)
    header_timeout_s: float = Field(5.0, gt=0, le=120)
    body_timeout_s: float = Field(5.0, gt=0, le=120)
    keep_alive_s: int = Field(5, ge=1, le=300, description="an idle keep-alive connection is closed after it")
    max_csv_line: int = Field(256, ge=16, le=4096, description="bytes per /invocations text/csv line")


class Costs(FrozenModel):
    """Rate-limit tokens per call beyond scoring's one per scoring: reads cost what they read."""

    identity: int = Field(1, ge=1, le=1000)
    connections_depth_1: int = Field(2, ge=1, le=1000)
    connections_depth_2: int = Field(10, ge=1, le=1000)


class ReadCapacity(FrozenModel):
    """Identity reads run on graph capacity of their own: their own connection pool, their own bound on
    requests at once and their own deadline, so no read traffic can take what scoring needs."""

    max_in_flight: int = Field(4, ge=1, le=1000, description="identity reads at once; more get a fast 503")
    pool_size: int = Field(2, ge=1, le=64, description="graph connections for reads (scoring has graph.pool_size)")
    timeout_s: float = Field(2.0, gt=0, le=30)


class ReviewRouting(FrozenModel):
    """Which review decisions become cases for people, and how many: the queue is people's time.

    Every decision is answered and audited. A case is queued once per customer per window; degraded
    decisions (graph or model down, unknown customer without identifiers) are queued only when
    ``degraded`` says so, and at most ``max_degraded_per_window`` of them — an outage must not turn into a
    thousand cases nobody can act on. Cases the queue would not take are kept in ``unsent_file``."""

    window_s: float = Field(600.0, gt=0, le=86_400)
    max_cases_per_window: int = Field(1000, ge=1, le=1_000_000)
    degraded: bool = Field(False, description="queue degraded reviews for people too")
    max_degraded_per_window: int = Field(20, ge=0, le=1_000_000)
    send_attempts: int = Field(3, ge=1, le=10)
    unsent_file: Path = Field(Path("serving/review-unsent.jsonl"), description="JSON lines; relative to data_dir")


class ExplainConfig(FrozenModel):
    """How much explanation a decision carries: the attribution costs a backward pass, so it runs where read."""

    top_k: int = Field(5, ge=1, le=50)
    model_attribution: Literal["flagged", "always", "never"] = Field(
        "flagged", description="when the model's gradient×input attribution runs: for review and block "
                               "decisions (default), on every request, or never")


class ServingConfig(FrozenModel):
    """Everything ``identigraph serve`` enforces; kept out of the settings so policy changes need no redeploy."""

    api_keys: list[ApiKey] = Field(min_length=1)
    policy: PolicyConfig = PolicyConfig()
    neighbourhood: NeighbourhoodCaps = NeighbourhoodCaps()
    graph: GraphAccess = GraphAccess()
    explain: ExplainConfig = ExplainConfig()
    max_batch: int = Field(50, ge=1, le=1000, description="items in one /v1/score:batch or /invocations call")
    max_in_flight: int = Field(32, ge=1, le=10_000,
                               description="scoring requests at once (bodies read); more get a fast 503")
    as_of: datetime | None = Field(
        None, description="the scoring clock; null: now. A replayed or synthetic world sets its own as-of, "
                          "or every recency feature would be off by the months since it was generated")
    default_action: Literal[IDENTITY_EVENT_TYPES] = "login"  # type: ignore[valid-type]
    review_queue: bool = Field(True, description="send review decisions with their explanation to queues.review")
    review: ReviewRouting = ReviewRouting()
    console: ConsoleConfig = ConsoleConfig()
    http: HttpLimits = HttpLimits()
    costs: Costs = Costs()
    reads: ReadCapacity = ReadCapacity()
    models_root: Path = Field(
        Path("deploy"), description="model:reload loads only directories under it (symlinks resolved); relative "
                                    "to data_dir. The lifecycle installs models under data_dir/deploy")
    audit_file: Path = Field(Path("serving/audit.jsonl"), description="JSON lines; relative to data_dir")
    invocations_open: bool = Field(
        False, description="/ping and /invocations without an API key: only where SageMaker's IAM is the gate")
    model_threads: int = Field(1, ge=1, le=64, description="torch intra-op threads; requests are the parallelism")
    model_watch_s: float | None = Field(
        None, gt=0, description="re-read the model directory's version this often and reload on change "
                                "(how every worker of a multi-process server follows a promotion); null: off")

    @field_validator("as_of")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    @model_validator(mode="after")
    def _unique_keys(self) -> ServingConfig:
        for attr in ("id", "sha256"):
            seen = [getattr(k, attr) for k in self.api_keys]
            if len(set(seen)) != len(seen):
                raise ValueError(f"api_keys: every key needs its own {attr}")
        return self

    def key_by_digest(self) -> dict[str, ApiKey]:
        return {k.sha256: k for k in self.api_keys}

    def per_worker(self, workers: int) -> ServingConfig:
        """This config's shared limits as one of ``workers`` server processes enforces them.

        Every process keeps its own buckets and counters (nothing crosses processes on the request path),
        so each gets 1/N of every per-key limit, of the read capacity and of the review budget — rounded
        up, at least one each. The total is then the configured one (up to N-1 more where rounding up
        bites), whichever process a request lands on. ``max_in_flight`` and the graph pools stay per process:
        they protect the process's own threads and connections."""
        if workers <= 1:
            return self
        share = lambda n: max(1, math.ceil(n / workers))  # noqa: E731
        keys = [k.model_copy(update={"max_concurrent": share(k.max_concurrent), "rate_limit": RateLimit(
            per_second=k.rate_limit.per_second / workers, burst=share(k.rate_limit.burst))}) for k in self.api_keys]
        review = self.review.model_copy(update={"max_cases_per_window": share(self.review.max_cases_per_window),
                                                "max_degraded_per_window": 0 if not self.review.max_degraded_per_window
                                                else share(self.review.max_degraded_per_window)})
        reads = self.reads.model_copy(update={"max_in_flight": share(self.reads.max_in_flight)})
        return self.model_copy(update={"api_keys": keys, "review": review, "reads": reads})


def load_serving_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                        environ: Mapping[str, str] | None = None) -> ServingConfig:
    """Read and validate; ``overrides`` are (dotted) keys that replace. Raises ConfigError naming every bad key."""
    return load_config(SERVING, ServingConfig, path, environ=environ, sets=overrides)
