"""One typed configuration tree for every stage.

Sources, later wins: the YAML file (``--config``, ``$IDENTIGRAPH_CONFIG`` or ``conf/identigraph.yaml``),
then environment variables ``IDENTIGRAPH__SECTION__KEY=value`` (values parsed as YAML scalars).
Unknown keys — in the file or in the environment — are rejected, because a mistyped key that is
silently ignored is how a production job ends up running with a default nobody chose.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from identigraph.errors import ConfigError

ENV_PREFIX = "IDENTIGRAPH__"
DEFAULT_CONFIG = Path("conf/identigraph.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BatchLimits(_Strict):
    """Bounds of one write request. Neptune asks for ~200 records and at most ~1,500 steps a request."""

    max_records: int = Field(1000, ge=1, le=100_000)
    max_steps: int = Field(1500, ge=10)
    concurrency: int = Field(1, ge=1, le=64)


class RetryPolicy(_Strict):
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
    version: str = "1.6.16"
    port: int = Field(9324, ge=1, le=65535)
    heap: str = "512m"


class ServicesConfig(_Strict):
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
        "FIFO: the consumer sends each poison message with its source MessageId as deduplication id, so a crash "
        "between the send and the delete cannot dead-letter it twice (if it comes back within FIFO's 5-minute "
        "deduplication window)"))
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


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: cannot parse value: {exc}") from None
    return tree


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown key")
        else:
            lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)


def load_settings(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings tree; raises ConfigError naming every bad field."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path or environ.get("IDENTIGRAPH_CONFIG")
    cfg_path = Path(explicit) if explicit else DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            loaded = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    elif explicit:
        raise ConfigError(f"configuration file not found: {cfg_path}")
    data = _deep_merge(data, _env_overrides(environ))
    if overrides:
        data = _deep_merge(data, overrides)
    source = f"{cfg_path if cfg_path.exists() else 'defaults'} + environment"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
