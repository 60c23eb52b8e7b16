"""The two local services — Gremlin Server (TinkerGraph) and ElasticMQ — rendered from config and run.

Tests, the demo and ``identigraph services`` all go through ``up``/``down``/``status`` here, so what the
tests exercise is what users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from identigraph.config import Settings
from identigraph.errors import ServiceError
from identigraph.services import artifacts
from identigraph.services.process import ManagedProcess, ServiceState

GREMLIN = "gremlin-server"
ELASTICMQ = "elasticmq"
NAMES = (GREMLIN, ELASTICMQ)


@dataclass
class ServiceReport:
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
    return settings.data_path / "graph" / "identigraph.kryo"


def _render_gremlin(settings: Settings) -> Path:
    _, _, conf_dir = _dirs(settings)
    conf_dir = conf_dir / GREMLIN
    conf_dir.mkdir(parents=True, exist_ok=True)
    gremlin_graph_file(settings).parent.mkdir(parents=True, exist_ok=True)
    tpl = artifacts.TEMPLATES
    props = conf_dir / "tinkergraph.properties"
    props.write_text((tpl / "tinkergraph.properties").read_text().format(
        graph_location=gremlin_graph_file(settings)))
    init = conf_dir / "init.groovy"
    init.write_text((tpl / "init.groovy").read_text())
    yaml_path = conf_dir / "gremlin-server.yaml"
    gs = settings.services.gremlin
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
        max_receive_count=q.max_receive_count, visibility=q.visibility_timeout_s))
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
            # The server is up but the graph failed to open (e.g. an unreadable persisted graph file).
            raise ServiceError(
                f"Gremlin Server answers but has no traversal source 'g': the graph failed to open "
                f"({gremlin_graph_file(settings)}); see {settings.data_path / 'logs' / (GREMLIN + '.log')}"
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
    argv = [
        java, f"-Xmx{gs.heap}", "-Xms256m", *_JAVA17_OPENS,
        f"-Dlogback.configurationFile={home / 'conf' / 'logback.xml'}",
        "-cp", artifacts.gremlin_server_classpath(home),
        "org.apache.tinkerpop.gremlin.server.GremlinServer", str(yaml_path),
    ]
    return _process(settings, GREMLIN).start(
        argv, gs.host, gs.port, lambda: _gremlin_ready(settings), gs.start_timeout_s, cwd=home)


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
    if settings.profile != "local":
        raise ValueError("local services run only in the local profile")
    reports = []
    for name in _check_names(names):
        state, started = _STARTERS[name](settings)
        reports.append(ServiceReport(name, True, started, state.host, state.port, state.pid, state.log,
                                     "started" if started else "already running"))
    return reports


def down(settings: Settings, names: list[str] | None = None) -> list[ServiceReport]:
    reports = []
    for name in _check_names(names):
        proc = _process(settings, name)
        stopped = proc.stop()
        reports.append(ServiceReport(name, False, log=str(proc.log_file),
                                     detail="stopped" if stopped else "was not running"))
    return reports


def status(settings: Settings, names: list[str] | None = None) -> list[ServiceReport]:
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
    _check_names([name])
    return _process(settings, name).tail(lines)
