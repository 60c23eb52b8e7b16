"""The stream end to end — publish → ElasticMQ → consumer → Gremlin Server — measured in one run.

Usage: python bench/stream.py [--customers 20000] [--backlog 30000] [--consumers 1,2,3] [--rate 1000]
                              [--seconds 30] [--before c0d2f58] [--packs 1] [--no-in-process]
                              [--out bench/results/stream.json]

Events: a synthetic world's stream replicated with fresh event ids (every event is new work), a hub IP put
into 15% of the identity events (a carrier NAT: in nearly every batch). Everything runs on this machine's
cores, ElasticMQ and Gremlin Server included; the graph is cleared between phases.

1. Before/after, same conditions, in this process: a ``--backlog`` drained by the consumer and writer of commit
   ``--before`` (loaded from git) and by the current ones: events/s and CPU seconds per 1,000 events.
2. Sustained: the backlog drained by 1, 2, 3 ``identigraph consume`` processes: events/s between the first and
   the last commit, transaction conflicts and retries (from /metrics), CPU per process per 1,000 events.
3. Latency: events published at ``--rate`` for ``--seconds`` to one consumer process; per event, seconds from
   SQS's SentTimestamp to the commit that applied it (p50/p99/max), and the time until a checkpoint made it
   durable and it was deleted (the acknowledgement, which is what the consumer waits for locally).

``--packs 1,50``: phases 2 and 3 once per number of events per SQS message (``etl.packing``), in one run. A
packed message leaves when it is full, so at ``--rate`` r an event also waits up to (pack - 1) / r in the
publisher before its SentTimestamp; that wait is reported beside the latency, not inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from identigraph.config import load_settings
from identigraph.config_loader import packaged_default
from identigraph.etl.consumer import Consumer
from identigraph.etl.publish import publish, sqs_client
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.services import local
from identigraph.services.process import free_port
from identigraph.synth import SynthParams, generate_world

REPO = Path(__file__).resolve().parents[1]
HUB_IP = "100.64.0.1"
IDENTITY = ("signup", "login", "add_payment_method", "profile_update", "booking")
PII_KEY = "bench-stream-pii-key-0123456789abcdef"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _services_cpu(settings: Any) -> dict[str, float]:
    return {name: _cpu(local._process(settings, name).state().pid) for name in (local.GREMLIN, local.ELASTICMQ)}


def _bodies(records: list[dict], n: int, tag: str) -> list[str]:
    out = []
    for i in range(n):
        r = dict(records[i % len(records)])
        r["event_id"] = f"{tag}{i:08d}"  # fresh ids: every event is new work, not a duplicate
        out.append(json.dumps(r))
    return out


def module_at(commit: str, path: str, name: str, replace: tuple[str, str] | None = None) -> Any:
    """The module at ``path`` as it was at ``commit``, registered as ``name`` (dataclasses look their module up
    while a class is built); ``replace`` rewrites one line of its source first, e.g. an import."""
    text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout
    if replace:
        text = text.replace(*replace)
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(text, f"<{commit}:{path}>", "exec"), mod.__dict__)
    return mod


def _load_before(commit: str) -> Any:
    """The consumer and stream writer as they were at ``commit``, as modules of their own."""
    module_at(commit, "src/identigraph/etl/stream_writer.py", "identigraph_before_writer")
    return module_at(commit, "src/identigraph/etl/consumer.py", "identigraph_before_consumer", replace=(
        "from identigraph.etl.stream_writer import StreamWriter", "from identigraph_before_writer import StreamWriter"))


def _old_consumer(old: Any, settings: Any, client: Any, sqs: Any) -> Any:
    """A consumer of an earlier commit on today's stream settings, plus the one the first commit measured
    (c0d2f58) read and today's do not have."""
    stream = types.SimpleNamespace(**settings.stream.model_dump(), receives_per_batch=5)
    return old.Consumer(settings.model_copy(update={"stream": stream}), client=client, sqs=sqs)


def _drain_in_process(settings: Any, make_consumer: Any, bodies: list[str]) -> dict[str, Any]:
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    publish(sqs, url, bodies)
    with GraphClient(settings) as client:
        consumer = make_consumer(client, sqs)
        svc0, me0, t0 = _services_cpu(settings), time.process_time(), time.perf_counter()
        stats = consumer.run(until_empty=True)
        seconds = time.perf_counter() - t0
        svc1, me1 = _services_cpu(settings), time.process_time()
        queries.clear(client)
    n = len(bodies)
    cpu = {"consumer": me1 - me0, **{k: svc1[k] - svc0[k] for k in svc0}}
    return {"events": n, "applied": stats.applied, "seconds": round(seconds, 2), "events_per_s": round(n / seconds),
            "batches": stats.batches, "cpu_s_per_1000_events": {k: round(v / n * 1000, 3) for k, v in cpu.items()}}


def _in_process(settings: Any, records: list[dict], backlog: int, before: str, result: dict[str, Any]) -> None:
    """Phase 1: the backlog drained by commit ``before``'s consumer (when given), then by today's."""
    if before:
        old = _load_before(before)
        result["before"] = {"commit": before, **_drain_in_process(
            settings, lambda c, s: _old_consumer(old, settings, c, s), _bodies(records, backlog, "bf"))}
        print(json.dumps({"before": result["before"]}), flush=True)
    result["after"] = _drain_in_process(settings, lambda c, s: Consumer(settings, client=c, sqs=s),
                                        _bodies(records, backlog, "af"))
    print(json.dumps({"after": result["after"]}), flush=True)
    if before:
        result["after_over_before_events_per_s"] = round(
            result["after"]["events_per_s"] / result["before"]["events_per_s"], 2)


class Consumers:
    """``identigraph consume`` processes, their latency logs and /metrics."""

    def __init__(self, settings: Any, work: Path, n: int, tag: str) -> None:
        self.settings, self.work, self.tag = settings, work, tag
        self.ports = [free_port() for _ in range(n)]
        exe = str(Path(sys.executable).with_name("identigraph"))
        self.procs = []
        for i, port in enumerate(self.ports):
            env = {**os.environ, "IDENTIGRAPH__DATA_DIR": str(settings.data_path),
                   "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(settings.services.gremlin.port),
                   "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port),
                   "IDENTIGRAPH__STREAM__HEALTH_PORT": str(port), "IDENTIGRAPH__STREAM__WAIT_S": "1",
                   "IDENTIGRAPH__PII__KEY": PII_KEY}
            log = self.work / f"{tag}-{i}.latency"
            log.unlink(missing_ok=True)
            with open(self.work / f"{tag}-{i}.err", "w") as err:  # the child keeps its own copy
                self.procs.append(subprocess.Popen([exe, "consume", "--latency-log", str(log)], env=env, cwd=REPO,
                                                   stdout=subprocess.DEVNULL, stderr=err))

    def wait_ready(self) -> None:
        for port in self.ports:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                        break
                except Exception:
                    time.sleep(0.3)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for port in self.ports:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            for line in text.splitlines():
                if line.startswith("identigraph_stream_") and "_total" in line.split(" ")[0]:
                    name, value = line.rsplit(" ", 1)
                    key = name.split("{")[0].replace("identigraph_stream_", "").replace("_total", "")
                    out[key] = out.get(key, 0.0) + float(value)
        return out

    def cpu(self) -> list[float]:
        return [_cpu(p.pid) for p in self.procs]

    def latencies(self) -> np.ndarray:
        rows = []
        for i in range(len(self.procs)):
            path = self.work / f"{self.tag}-{i}.latency"
            if path.exists():
                rows += [tuple(map(int, line.split())) for line in path.read_text().splitlines() if line.strip()]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()


def _queue_empty(sqs: Any, url: str) -> bool:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                               "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"


def _sustained(settings: Any, work: Path, bodies: list[str], n: int, pack: int = 1) -> dict[str, Any]:
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    publish(sqs, url, bodies, events_per_message=pack)
    svc0 = _services_cpu(settings)
    group = Consumers(settings, work, n, f"sustained{n}")
    try:
        group.wait_ready()
        cpu_ready = group.cpu()
        while True:
            lat = group.latencies()
            if len(lat) >= len(bodies):
                break
            time.sleep(0.5)
        t_acked = time.time()
        while not _queue_empty(sqs, url):
            time.sleep(0.5)
        acked_s = time.time() - t_acked
        cpu = [c - c0 for c, c0 in zip(group.cpu(), cpu_ready, strict=True)]
        metrics = group.metrics()
    finally:
        group.stop()
    svc1 = _services_cpu(settings)
    commits = lat[:, 1] / 1000
    window = float(commits.max() - commits.min())
    with GraphClient(settings) as client:
        queries.clear(client)
    k = len(bodies) / 1000
    return {"consumers": n, "events_per_message": pack, "events": len(bodies), "seconds_first_to_last_commit": round(window, 2),
            "events_per_s": round(len(bodies) / window), "last_delete_after_last_commit_s": round(acked_s, 1),
            "conflicts": int(metrics.get("conflicts", 0)), "graph_retries": int(metrics.get("graph_retries", 0)),
            "written": int(metrics.get("written", 0)), "duplicates": int(metrics.get("duplicates", 0)),
            "cpu_s_per_1000_events": {"consumers": [round(c / k, 3) for c in cpu],
                                      **{s: round((svc1[s] - svc0[s]) / k, 3) for s in svc0}}}


def _latency(settings: Any, work: Path, bodies: list[str], rate: float, pack: int = 1) -> dict[str, Any]:
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    group = Consumers(settings, work, 1, "latency")
    try:
        group.wait_ready()
        svc0, c0, me0 = _services_cpu(settings), group.cpu(), time.process_time()
        t0 = time.perf_counter()
        rep = publish(sqs, url, bodies, rate=rate, events_per_message=pack)
        while len(group.latencies()) < len(bodies):
            time.sleep(0.5)
        t_committed = time.time()
        while not _queue_empty(sqs, url):
            time.sleep(0.2)
        ack_tail = time.time() - t_committed
        seconds = time.perf_counter() - t0
        svc1, c1, me1 = _services_cpu(settings), group.cpu(), time.process_time()
        lat = group.latencies()
    finally:
        group.stop()
    x = (lat[:, 1] - lat[:, 0]) / 1000
    k = len(bodies) / 1000
    return {"offered_per_s": rate, "events_per_message": pack, "publisher_wait_max_s": round((pack - 1) / rate, 3),
            "achieved_publish_per_s": round(rep.events / rep.seconds), "events": len(bodies),
            "p50_s": round(float(np.percentile(x, 50)), 3), "p99_s": round(float(np.percentile(x, 99)), 3),
            "max_s": round(float(x.max()), 3), "last_delete_after_last_commit_s": round(ack_tail, 1),
            "cpu_s_per_1000_events": {"consumer": round((c1[0] - c0[0]) / k, 3), "publisher": round((me1 - me0) / k, 3),
                                      **{s: round((svc1[s] - svc0[s]) / k, 3) for s in svc0}},
            "wall_s": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--backlog", type=int, default=30_000)
    ap.add_argument("--consumers", default="1,2,3")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--before", default="c0d2f58", help="commit whose consumer is the 'before' (empty: skip)")
    ap.add_argument("--packs", default="1", help="events per SQS message for phases 2 and 3, e.g. 1,50")
    ap.add_argument("--no-in-process", action="store_true", help="skip phase 1 (before/after in this process)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stream.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="identigraph-bench-stream-"))
    settings = load_settings(packaged_default("identigraph.yaml"), environ={}, overrides={
        "data_dir": str(work), "pii": {"key": PII_KEY},
        "services": {"gremlin": {"port": free_port()}, "elasticmq": {"port": free_port()}},
        "stream": {"wait_s": 1, "health_port": 0},
    })
    world = generate_world(SynthParams(customers=args.customers, seed=31, stream_days=14))
    records = list(world.stream_records())
    for i, r in enumerate(records):
        if r["event_type"] in IDENTITY and i % 7 == 0:  # ~15% of identity events
            r["ip"] = HUB_IP
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "stream_records_in_world": len(records), "backlog": args.backlog, "hub_share_of_identity_events": 1 / 7,
        "config": {k: v for k, v in settings.stream.model_dump().items()},
        "checkpoint_interval_s": settings.services.gremlin.checkpoint_interval_s}
    local.up(settings)
    try:
        if not args.no_in_process:
            _in_process(settings, records, args.backlog, args.before, result)
        packs = [int(x) for x in args.packs.split(",") if x]
        result["sustained"], result["latencies"] = [], []
        for pack in packs:
            for n in [int(x) for x in args.consumers.split(",") if x]:
                r = _sustained(settings, work, _bodies(records, args.backlog, f"s{n}p{pack}_"), n, pack)
                result["sustained"].append(r)
                print(json.dumps(r), flush=True)
        for pack in packs:
            r = _latency(settings, work, _bodies(records, int(args.rate * args.seconds), f"lt{pack}_"), args.rate, pack)
            result["latencies"].append(r)
            print(json.dumps(r), flush=True)
        result["latency"] = result["latencies"][0]
    finally:
        local.down(settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
