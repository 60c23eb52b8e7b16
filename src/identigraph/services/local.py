"""The two local services — Gremlin Server (TinkerGraph) and ElasticMQ — rendered from config and run.

Tests, the demo and ``identigraph services`` all go through ``up``/``down``/``status`` here, so what the
tests exercise is what users run.

The local graph is durable by checkpoints (``templates/init.groovy``): a transaction-consistent capture every
``services.gremlin.checkpoint_interval_s`` and on SIGTERM, written beside the previous ones, fsynced and renamed
into place, its metadata (``graph-N.json``, ``LATEST.json``) written last. The server restores the newest one
that reads back and records what it did in ``boot.json``. The stream consumer deletes a message only once a
checkpoint holds its effect (``checkpoint_covers``); Neptune needs none of this, its commits are durable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identigraph.config import Settings
from identigraph.errors import ServiceError
from identigraph.services import artifacts
from identigraph.services.process import ManagedProcess, ServiceState

GREMLIN = "gremlin-server"
ELASTICMQ = "elasticmq"
NAMES = (GREMLIN, ELASTICMQ)


@dataclass
class ServiceReport:
    """One local service's state as the CLI shows it after up, down or status."""
    name: str
    running: bool
    started_now: bool = False
    host: str | None = None
    port: int | None = None
    pid: int | None = None
    log: str | None = None
    detail: str = ""


def _dirs(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.data_path
    return base / "run", base / "logs", base / "services"


def _process(settings: Settings, name: str) -> ManagedProcess:
    run, logs, _ = _dirs(settings)
    return ManagedProcess(name, run, logs)


def gremlin_graph_file(settings: Settings) -> Path:
    """Where TinkerGraph's own close-time persistence wrote the graph before checkpoints; restored once if found."""
    return settings.data_path / "graph" / "identigraph.kryo"


def checkpoint_dir(settings: Settings) -> Path:
    """Where the local graph's checkpoints live, so a restarted server finds its data."""
    return settings.data_path / "graph" / "checkpoints"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or replaced while we read it (renames are atomic; reads retry)
        return None


def latest_checkpoint(settings: Settings) -> dict[str, Any] | None:
    """The newest checkpoint's metadata: seq, file, boot_id, consistent_at_ms, vertices, edges, bytes, seconds."""
    return _read_json(checkpoint_dir(settings) / "LATEST.json")


def boot_info(settings: Settings) -> dict[str, Any] | None:
    """What the running server restored at start: boot_id, restored (a checkpoint's metadata or null), skipped."""
    return _read_json(checkpoint_dir(settings) / "boot.json")


def checkpoint_covers(latest: dict[str, Any] | None, boot: dict[str, Any] | None, boot_id: str, at_ms: int) -> bool:
    """Is a commit made on server instance ``boot_id``, acknowledged at ``at_ms``, in a durable checkpoint?

    Yes if a checkpoint of that instance was captured after it; or if the server has since restarted from a
    checkpoint that instance captured after it. Anything else must be written again (writes are idempotent).
    """
    if latest and latest.get("boot_id") == boot_id and latest.get("consistent_at_ms", 0) > at_ms:
        return True
    restored = (boot or {}).get("restored") or {}
    return restored.get("boot_id") == boot_id and restored.get("consistent_at_ms", 0) > at_ms


def _gremlin_timeout(settings: Settings, base: float) -> float:
    """Start (restore) and stop (final checkpoint) get the time the graph's size needs, measured last time."""
    last = latest_checkpoint(settings) or {}
    seconds = float(last.get("seconds") or 0.0)
    megabytes = float(last.get("bytes") or 0) / 1e6
    return max(base, 30.0 + 4 * seconds + 0.5 * megabytes)


# A TinkerTransactionGraph in memory takes ~15× its Kryo checkpoint (a 30,000-customer world: ~100 MB of file filled
# a 2 GiB heap); twice that leaves room for requests and for the graph to grow, so GC does not compete with queries.
HEAP_PER_CHECKPOINT_BYTE = 32
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _jvm_bytes(size: str) -> int:
    return int(size[:-1]) * _UNITS[size[-1].lower()]


def gremlin_heap(settings: Settings) -> tuple[str, str]:
    """(-Xmx value, why): ``heap`` as configured, or for 'auto' 32 × the size of the graph the server will restore
    (newest checkpoint, else the pre-checkpoint file), between ``heap_min`` and ``heap_max``, in whole 256 MiB."""
    gs = settings.services.gremlin
    if gs.heap != "auto":
        return gs.heap, "configured"
    size = int((latest_checkpoint(settings) or {}).get("bytes") or 0)
    if not size and gremlin_graph_file(settings).exists():
        size = gremlin_graph_file(settings).stat().st_size
    step = 256 << 20
    want = -(-HEAP_PER_CHECKPOINT_BYTE * size // step) * step
    lo, hi = _jvm_bytes(gs.heap_min), _jvm_bytes(gs.heap_max)
    heap = min(max(want, lo), max(hi, lo))
    bound = " (floor)" if heap == lo and want < lo else " (cap)" if heap < want else ""
    return f"{heap >> 20}m", f"auto: {HEAP_PER_CHECKPOINT_BYTE} × {size / 1e6:,.0f} MB graph file{bound}"


def _render_gremlin(settings: Settings) -> Path:
    _, _, conf_dir = _dirs(settings)
    conf_dir = conf_dir / GREMLIN
    conf_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir(settings).mkdir(parents=True, exist_ok=True)
    tpl = artifacts.TEMPLATES
    gs = settings.services.gremlin
    props = conf_dir / "tinkergraph.properties"
    props.write_text((tpl / "tinkergraph.properties").read_text())
    cfg = conf_dir / "checkpoints.json"
    cfg.write_text(json.dumps({
        "dir": str(checkpoint_dir(settings)), "interval_s": gs.checkpoint_interval_s,
        "max_share": gs.checkpoint_max_share, "keep": gs.checkpoint_keep,
        "legacy_file": str(gremlin_graph_file(settings))}))
    init = conf_dir / "init.groovy"
    init.write_text((tpl / "init.groovy").read_text().replace("@CONFIG_PATH@", str(cfg)))
    yaml_path = conf_dir / "gremlin-server.yaml"
    yaml_path.write_text((tpl / "gremlin-server.yaml").read_text().format(
        host=gs.host, port=gs.port, graph_properties=props, init_script=init))
    return yaml_path


def _render_elasticmq(settings: Settings) -> Path:
    _, _, conf_dir = _dirs(settings)
    conf_dir = conf_dir / ELASTICMQ
    conf_dir.mkdir(parents=True, exist_ok=True)
    q, em = settings.queues, settings.services.elasticmq
    path = conf_dir / "elasticmq.conf"
    path.write_text((artifacts.TEMPLATES / "elasticmq.conf").read_text().format(
        host=em.host, port=em.port, messages_db=conf_dir / "messages",
        events=q.events, dead_letter=q.dead_letter, review=q.review,
        visibility=q.visibility_timeout_s))
    return path


def _gremlin_ready(settings: Settings) -> bool:
    from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
    from gremlin_python.driver.protocol import GremlinServerError
    from gremlin_python.process.anonymous_traversal import traversal

    gs = settings.services.gremlin
    # A real request through the same serializer the graph layer uses (GraphBinary bytecode).
    conn = DriverRemoteConnection(f"ws://{gs.host}:{gs.port}/gremlin", "g")
    try:
        return traversal().with_remote(conn).inject(1).next() == 1
    except GremlinServerError as exc:
        if "not configured" in str(exc):
            # The server is up but its start-up script failed (checkpoints that fail to read are skipped there).
            raise ServiceError(
                f"Gremlin Server answers but has no traversal source 'g': its start-up script failed "
                f"(checkpoints in {checkpoint_dir(settings)}); see {settings.data_path / 'logs' / (GREMLIN + '.log')}"
            ) from None
        raise
    finally:
        conn.close()


def _elasticmq_ready(settings: Settings) -> bool:
    import boto3

    em = settings.services.elasticmq
    sqs = boto3.client(
        "sqs", endpoint_url=f"http://{em.host}:{em.port}", region_name=settings.queues.region,
        aws_access_key_id="local", aws_secret_access_key="local",
    )
    urls = sqs.list_queues().get("QueueUrls", [])
    names = {u.rsplit("/", 1)[-1] for u in urls}
    q = settings.queues
    return {q.events, q.dead_letter, q.review} <= names


# Gryo persistence reflects into JDK classes that Java 17 keeps closed unless opened explicitly.
_JAVA17_OPENS = [
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in ("java.lang", "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "java.io", "java.nio")
]


def _start_gremlin(settings: Settings) -> tuple[ServiceState, bool]:
    java = artifacts.require_tool(settings.services.java, "Java")
    home = artifacts.gremlin_server_home(settings)
    yaml_path = _render_gremlin(settings)
    gs = settings.services.gremlin
    heap, _ = gremlin_heap(settings)
    argv = [
        java, f"-Xmx{heap}", "-Xms256m", *_JAVA17_OPENS,
        f"-Dlogback.configurationFile={home / 'conf' / 'logback.xml'}",
        "-cp", f"{artifacts.checkpoint_classes(settings)}:{artifacts.gremlin_server_classpath(home)}",
        "org.apache.tinkerpop.gremlin.server.GremlinServer", str(yaml_path),
    ]
    return _process(settings, GREMLIN).start(
        argv, gs.host, gs.port, lambda: _gremlin_ready(settings), _gremlin_timeout(settings, gs.start_timeout_s),
        cwd=home)


def _start_elasticmq(settings: Settings) -> tuple[ServiceState, bool]:
    java = artifacts.require_tool(settings.services.java, "Java")
    cp = artifacts.elasticmq_classpath(settings)
    conf = _render_elasticmq(settings)
    em = settings.services.elasticmq
    argv = [java, f"-Xmx{em.heap}", f"-Dconfig.file={conf}", "-cp", cp, "org.elasticmq.server.Main"]
    return _process(settings, ELASTICMQ).start(
        argv, em.host, em.port, lambda: _elasticmq_ready(settings), em.start_timeout_s)


_STARTERS = {GREMLIN: _start_gremlin, ELASTICMQ: _start_elasticmq}


def _check_names(names: tuple[str, ...] | list[str] | None) -> list[str]:
    chosen = list(names or NAMES)
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; choose from {list(NAMES)}")
    return chosen


def up(settings: Settings, names: list[str] | None = None) -> list[ServiceReport]:
    """Start the local services not running yet; only the local profile runs its own graph and queues."""
    if settings.profile != "local":
        raise ValueError("local services run only in the local profile")
    reports = []
    for name in _check_names(names):
        heap, why = gremlin_heap(settings) if name == GREMLIN else ("", "")  # what the start will use
        state, started = _STARTERS[name](settings)
        detail = "started" if started else "already running"
        if name == GREMLIN and started:
            detail = f"{restore_summary(boot_info(settings))}; heap {heap} ({why})"
        reports.append(ServiceReport(name, True, started, state.host, state.port, state.pid, state.log, detail))
    return reports


def restore_summary(boot: dict[str, Any] | None) -> str:
    """One line for ``services up``: which checkpoint the graph came from, and any that could not be read."""
    if not boot:
        return "started"
    restored = boot.get("restored")
    if restored and restored.get("legacy"):
        text = f"started; graph restored from {restored['file']} (pre-checkpoint file)"
    elif restored:
        text = (f"started; graph restored from checkpoint {restored['seq']} ({restored['vertices']:,} vertices, "
                f"{restored['edges']:,} edges)")
    else:
        text = "started with an empty graph"
    for bad in boot.get("skipped") or []:
        text += f"; WARNING: {bad['file']} could not be read and was skipped ({bad['error'][:200]})"
    return text


def down(settings: Settings, names: list[str] | None = None) -> list[ServiceReport]:
    """Stop the local services; Gremlin Server gets the time its last checkpoint took to write a final one."""
    reports = []
    for name in _check_names(names):
        proc = _process(settings, name)
        # SIGTERM makes Gremlin Server write a final checkpoint: give it the time the last one took, and more
        stopped = proc.stop(_gremlin_timeout(settings, 60.0) if name == GREMLIN else 60.0)
        reports.append(ServiceReport(name, False, log=str(proc.log_file),
                                     detail="stopped" if stopped else "was not running"))
    return reports


def status(settings: Settings, names: list[str] | None = None) -> list[ServiceReport]:
    """Whether each local service is running and answering, for the CLI and the tests' fixtures."""
    reports = []
    for name in _check_names(names):
        proc = _process(settings, name)
        state = proc.state()
        if state is None:
            reports.append(ServiceReport(name, False, log=str(proc.log_file), detail="not running"))
            continue
        probe = _gremlin_ready if name == GREMLIN else _elasticmq_ready
        try:
            healthy = probe(settings)
            detail = "answering" if healthy else "running, not ready"
        except Exception as exc:  # status must report, not crash, whatever the service says
            detail = f"running, probe failed: {type(exc).__name__}"
        reports.append(ServiceReport(name, True, False, state.host, state.port, state.pid, state.log, detail))
    return reports


def logs(settings: Settings, name: str, lines: int = 50) -> str:
    """The tail of a local service's log, for diagnosing a start that failed."""
    _check_names([name])
    return _process(settings, name).tail(lines)
