"""One typed configuration tree for every stage.

Sources, later wins: the YAML file (``--config``, ``$IDENTIGRAPH_CONFIG`` or the packaged
``identigraph/defaults/identigraph.yaml``), then environment variables ``IDENTIGRAPH__SECTION__KEY=value``
(values parsed as YAML scalars). Read like every other configuration (``identigraph.config_loader``):
unknown keys — in the file or in the environment — are rejected, because a mistyped key that is silently
ignored is how a production job ends up running with a default nobody chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from identigraph.config_loader import SETTINGS, StrictModel, load_config

ENV_PREFIX = SETTINGS.env_prefix


class _Strict(StrictModel):
    """The settings tree checks assignments too: jobs adjust a copy of it (tests, benchmarks) and stay valid."""

    model_config = ConfigDict(validate_assignment=True)


class BatchLimits(_Strict):
    """Bounds of one write request. Neptune asks for ~200 records and at most ~1,500 steps a request."""

    max_records: int = Field(1000, ge=1, le=100_000)
    max_steps: int = Field(1500, ge=10)
    concurrency: int = Field(1, ge=1, le=64)


class RetryPolicy(_Strict):
    """Backoff for the graph's transient errors (concurrent modification, throttling): bounded, then it fails."""

    attempts: int = Field(12, ge=1)
    initial_backoff_s: float = Field(0.05, gt=0)
    max_backoff_s: float = Field(2.0, gt=0)


class GraphConfig(_Strict):
    """Where the Gremlin client connects. ``host: null`` means the local Gremlin Server of ``services``."""

    kind: Literal["tinkergraph", "neptune"] = "tinkergraph"
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    use_tls: bool = False
    iam_auth: bool = False
    region: str | None = None
    traversal_source: str = "g"
    pool_size: int = Field(4, ge=1, le=64)
    allow_clear_neptune: bool = False
    batch: BatchLimits = BatchLimits()
    retry: RetryPolicy = RetryPolicy()

    @model_validator(mode="after")
    def _neptune_needs_host(self) -> GraphConfig:
        if self.kind == "neptune" and not self.host:
            raise ValueError("graph.host is required when graph.kind is 'neptune'")
        if self.iam_auth and not self.region:
            raise ValueError("graph.region is required when graph.iam_auth is true")
        return self


class _JavaServiceConfig(_Strict):
    version: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    heap: str
    start_timeout_s: float = Field(120, gt=0)


_JVM_SIZE = r"^[1-9][0-9]*[kKmMgG]$"


class GremlinServerConfig(_JavaServiceConfig):
    """The local graph: a TinkerGraph in Gremlin Server, checkpointed so a restart keeps what was acknowledged."""

    version: str = "3.7.5"
    port: int = Field(8182, ge=1, le=65535)
    heap: str = Field("auto", pattern=r"^([1-9][0-9]*[kKmMgG]|auto)$", description="-Xmx: a JVM size (4g, 3072m) or "
                      "'auto': sized for the graph the server restores (its checkpoint's size), heap_min..heap_max")
    heap_min: str = Field("2g", pattern=_JVM_SIZE, description="floor of the 'auto' heap")
    heap_max: str = Field("4g", pattern=_JVM_SIZE, description="cap of the 'auto' heap")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="how often the local graph is checkpointed to disk; "
                                         "the stream consumer acknowledges a message once a checkpoint holds it")
    checkpoint_max_share: float = Field(0.25, gt=0, le=1, description="at most this share of the time goes to "
                                        "checkpoints: a large graph is checkpointed less often")
    checkpoint_keep: int = Field(3, ge=2, le=100, description="checkpoints kept; an unreadable newest one falls back")


class ElasticMQConfig(_JavaServiceConfig):
    """The local SQS: ElasticMQ, so the stream runs the same code locally as against AWS."""

    version: str = "1.6.16"
    port: int = Field(9324, ge=1, le=65535)
    heap: str = "512m"


class ServicesConfig(_Strict):
    """The local Java services and where their downloads are cached (outside the clone, reused by CI)."""

    java: str = "java"
    mvn: str = "mvn"
    cache_dir: Path = Path("~/.cache/identigraph")
    gremlin: GremlinServerConfig = GremlinServerConfig()
    elasticmq: ElasticMQConfig = ElasticMQConfig()


class QueueConfig(_Strict):
    """SQS queues. ``endpoint_url: null`` means the local ElasticMQ (local profile) or AWS (production)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    events: str = "identigraph-events"
    dead_letter: str = Field("identigraph-events-dlq.fifo", pattern=r"\.fifo$", description=(
        "FIFO, deduplication scope 'queue' (the default): the consumer sends each poison message with its source "
        "MessageId as deduplication id (and a group of its own), so a crash between the send and the delete "
        "cannot dead-letter it twice if it comes back within FIFO's 5-minute deduplication window; later copies "
        "are de-duplicated by source message id where the DLQ is read ('identigraph dlq')"))
    review: str = "identigraph-review"
    visibility_timeout_s: int = Field(30, ge=2, le=43200)


class StreamConfig(_Strict):
    """The stream consumer (SQS → graph)."""

    batch_max: int = Field(500, ge=1, le=5000, description="events folded into one graph transaction at most")
    batch_wait_ms: int = Field(100, ge=0, le=10_000, description="how long a batch waits to fill once it has one message")
    receivers: int = Field(2, ge=1, le=32, description="threads long-polling SQS (10 messages a call)")
    sqs_workers: int = Field(4, ge=1, le=64, description="threads for deletes, visibility changes and DLQ sends")
    max_in_flight: int = Field(30_000, ge=10, le=120_000, description=(
        "messages held (received, not yet deleted) before receiving pauses; SQS allows 120,000 per queue"))
    dedup_window: int = Field(256, ge=8, le=100_000, description=(
        "event ids remembered per customer for de-duplication; an older event below the window is dead-lettered, "
        "not applied twice"))
    wait_s: int = Field(20, ge=0, le=20, description="long-poll wait (SQS allows at most 20 s)")
    health_port: int = Field(9400, ge=0, le=65535, description="/healthz /readyz /metrics; 0 disables")


class EtlConfig(_Strict):
    """Spark settings for the historical load. Under spark-submit the submitter's own settings win; these
    fill only what it left unset. None means "derived from the data and the cluster"."""

    master: str = "local[*]"
    shuffle_partitions: int | None = Field(None, ge=1, description="None: ~1 per 128 MiB of input, ≥ 2 per core")
    driver_memory: str = "4g"
    output_files: int | None = Field(None, ge=1, description="CSV parts per label; None: one per rows_per_file")
    rows_per_file: int = Field(1_000_000, ge=1, description="rows per CSV part when output_files is None")
    load_partitions: int = Field(2, ge=1, description="Spark partitions writing to the graph at once")
    partition_column: str = Field("dt", description="date partition column of partitioned input (yyyy-MM-dd)")
    keep_runs: int = Field(3, ge=1, description="published snapshot runs kept per location")
    hive_dir: Path | None = Field(None, description="local runs: embedded (Derby) Hive metastore + warehouse here")


class PiiConfig(_Strict):
    """Key for the keyed hash of emails and phones. Never logged; never written anywhere but the key file."""

    key: str | None = Field(None, repr=False)
    key_env: str = "IDENTIGRAPH_PII_KEY"
    secret_id: str | None = None  # AWS Secrets Manager secret holding the key (production)


class Settings(_Strict):
    """The platform tree every stage shares: one profile decides what "local" means for all of them."""

    profile: Literal["local", "production"] = "local"
    data_dir: Path = Path("var")
    graph: GraphConfig = GraphConfig()
    services: ServicesConfig = ServicesConfig()
    queues: QueueConfig = QueueConfig()
    etl: EtlConfig = EtlConfig()
    stream: StreamConfig = StreamConfig()
    pii: PiiConfig = PiiConfig()

    @model_validator(mode="after")
    def _production_is_explicit(self) -> Settings:
        if self.profile == "production" and self.graph.host is None:
            raise ValueError("graph.host must be set in the production profile (no local server there)")
        return self

    # Derived endpoints: one place decides what "local" means.
    @property
    def graph_host(self) -> str:
        return self.graph.host or self.services.gremlin.host

    @property
    def graph_port(self) -> int:
        return self.graph.port or self.services.gremlin.port

    @property
    def queue_endpoint(self) -> str | None:
        if self.queues.endpoint_url:
            return self.queues.endpoint_url
        if self.profile == "local":
            return f"http://{self.services.elasticmq.host}:{self.services.elasticmq.port}"
        return None

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def cache_path(self) -> Path:
        return self.services.cache_dir.expanduser().resolve()


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings tree; ``overrides`` is a nested tree merged over file and environment.

    Raises ConfigError naming the file and every bad key."""
    return load_config(SETTINGS, Settings, path, environ=environ, merge=overrides)


@dataclass(frozen=True)
class SettingsFile:
    """The CLI's global ``--config``, carried on the typer context (``ctx.obj``) to every command.

    Commands load the settings only when they need them, so one that needs none (``--help``) never fails on a
    bad file, and no command module has to import the CLI's entry module to find them."""

    path: Path | None = None

    def load(self) -> Settings:
        return load_settings(self.path)
