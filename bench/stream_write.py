"""Gremlin Server CPU per streamed event: the write traversal of an earlier commit against the current one, in one run.

Usage: python bench/stream_write.py [--before a64b9b3[,commit...]] [--shapes old,new] [--customers 3000] [--events 6000]
                                    [--rounds 2] [--jfr old,new] [--out bench/results/stream_write.json]

No queue and no consumer: a synthetic world's stream (fresh event ids, a hub IP in 1/7 of identity events, as in
bench/stream.py) is cut into 500-event batches and written straight through a ``StreamWriter`` — the one of each commit
in ``--before`` loaded from git ("old" for the first, "at-<commit>" for the others: its whole module, rows and
traversal), the one in src ("new"), and on request two variants of it that tell the shape's share from the
Gremlin-Server-only source tuning: every strategy on and no sack ("new_untuned"), strategies skipped but no sack
("new_no_sack"). Every phase starts from an empty graph and writes the
same batches; phases alternate for ``--rounds`` rounds after one full warm-up pass of each (the JIT compiles the first
requests for a long time on 2 cores). ``--jfr`` shapes are profiled in extra, unmeasured phases (a JFR ``profile``
recording costs this server a lot more than a few percent). Measured per phase: Gremlin Server CPU (utime+stime from
/proc), this process's CPU, events/s, and a digest of everything the graph holds, so the shapes are shown to write the
same graph. Checkpoints are set to once an hour: they serialise the whole graph whatever the traversal, and would only
add noise here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gremlin_python.process.graph_traversal import __

from identigraph.config import load_settings
from identigraph.config_loader import packaged_default
from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import SKIPPED_STRATEGIES, StreamWriter
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.services import local
from identigraph.services.process import free_port
from identigraph.synth import SynthParams, generate_world

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream import HUB_IP, IDENTITY, PII_KEY, _bodies, _cpu, module_at  # same world, CPU reading, git loader

REPO = Path(__file__).resolve().parents[1]
BATCH = 500


def _writer_of(commit: str) -> Any:
    """The stream writer module as it was at ``commit`` (the package's other modules are today's: the writer only uses
    their stable parts)."""
    return module_at(commit, "src/identigraph/etl/stream_writer.py", f"identigraph_stream_writer_{commit}")


class _Untuned(StreamWriter):
    """The new shape as Neptune gets it (every strategy on, no sack): the shape's share of the change, apart."""

    def _source(self, g: Any) -> Any:
        return g


class _StrategiesOnly(StreamWriter):
    """The new shape with the strategies skipped but no sack: the sack's share of the tuning, apart."""

    def _source(self, g: Any) -> Any:
        return g.without_strategies(*SKIPPED_STRATEGIES)


def _digest(client: GraphClient) -> dict[str, Any]:
    """Everything the graph holds, order-free: element counts and a hash of every element's id, label and values."""
    def rows(elements: str) -> list[str]:
        def build(g: Any) -> Any:
            src = g.V() if elements == "V" else g.E()
            return src.project("id", "l", "p").by(__.id_()).by(__.label()).by(__.value_map())
        out = []
        for r in client.submit(build):
            props = {k: sorted(map(str, v)) if isinstance(v, list) else str(v) for k, v in r["p"].items()}
            out.append(json.dumps([str(r["id"]), r["l"], props], sort_keys=True))
        return sorted(out)

    v, e = rows("V"), rows("E")
    return {"vertices": len(v), "edges": len(e), "sha256": hashlib.sha256("\n".join(v + e).encode()).hexdigest()[:16]}


def _jfr(pid: int, action: str, path: Path) -> None:
    cmd = ["jcmd", str(pid), f"JFR.{action}", "name=bench"]
    cmd += [f"filename={path}", "settings=profile"] if action == "start" else [f"filename={path}"]
    subprocess.run(cmd, check=True, capture_output=True)


def _phase(settings: Any, writer: Any, batches: list[list[Any]], jfr: Path | None = None) -> dict[str, Any]:
    state = local._process(settings, local.GREMLIN).state()
    if state is None:
        raise RuntimeError("Gremlin Server is not running: nothing to measure")
    gremlin = state.pid
    queries.clear(writer.client)
    if jfr:
        _jfr(gremlin, "start", jfr)
    s0, me0, t0 = _cpu(gremlin), time.process_time(), time.perf_counter()
    applied = 0
    for batch in batches:
        applied += writer.write(batch).applied
    seconds = time.perf_counter() - t0
    s1, me1 = _cpu(gremlin), time.process_time()
    if jfr:
        _jfr(gremlin, "stop", jfr)
    n = sum(len(b) for b in batches)
    return {"events": n, "applied": applied, "seconds": round(seconds, 2), "events_per_s": round(n / seconds),
            "server_cpu_ms_per_event": round((s1 - s0) / n * 1000, 3),
            "client_cpu_ms_per_event": round((me1 - me0) / n * 1000, 3), "graph": _digest(writer.client)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="a64b9b3", help="commits whose writers are measured: 'old', then 'at-<commit>'")
    ap.add_argument("--shapes", default="old,new", help="of old, at-<commit>, new_untuned, new_no_sack, new; 'old' first")
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--events", type=int, default=6000, help="events per phase")
    ap.add_argument("--rounds", type=int, default=2, help="measured old/new pairs after the warm-up")
    ap.add_argument("--jfr", default="", help="shapes to profile with JFR after the measured rounds (old,new)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stream_write.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="identigraph-bench-stream-write-"))
    settings = load_settings(packaged_default("identigraph.yaml"), environ={}, overrides={
        "data_dir": str(work), "pii": {"key": PII_KEY},
        "services": {"gremlin": {"port": free_port(), "checkpoint_interval_s": 3600},
                     "elasticmq": {"port": free_port()}},
    })
    world = generate_world(SynthParams(customers=args.customers, seed=31, stream_days=14))
    records = list(world.stream_records())
    for i, r in enumerate(records):
        if r["event_type"] in IDENTITY and i % 7 == 0:
            r["ip"] = HUB_IP
    events = [parse_message(b) for b in _bodies(records, args.events, "sw")]
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    pseudo = Pseudonymiser(PII_KEY.encode())
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "before": args.before, "customers": args.customers, "events_per_phase": len(events), "batch": BATCH, "phases": []}
    jfr_shapes = {s for s in args.jfr.split(",") if s}
    local.up(settings, [local.GREMLIN])
    try:
        with GraphClient(settings) as client:
            commits = args.before.split(",")
            make = {"old": lambda: _writer_of(commits[0]).StreamWriter(client, pseudo),
                    **{f"at-{c}": lambda c=c: _writer_of(c).StreamWriter(client, pseudo) for c in commits[1:]},
                    "new_untuned": lambda: _Untuned(client, pseudo),
                    "new_no_sack": lambda: _StrategiesOnly(client, pseudo),
                    "new": lambda: StreamWriter(client, pseudo)}
            shapes = {name: make[name]() for name in args.shapes.split(",")}
            for name, writer in shapes.items():  # warm-up: the JIT compiles both shapes' steps
                print(json.dumps({"warm-up": name, **_phase(settings, writer, batches)}), flush=True)
            for rnd in range(args.rounds):
                for name, writer in shapes.items():
                    r = {"round": rnd, "shape": name, **_phase(settings, writer, batches)}
                    result["phases"].append(r)
                    print(json.dumps(r), flush=True)
            for name in jfr_shapes:  # profiled apart: the recording's own cost stays out of the measured phases
                r = _phase(settings, shapes[name], batches, work / f"{name}.jfr")
                result[f"profiled_{name}"] = {**r, "jfr": str(work / f"{name}.jfr")}
                print(json.dumps({"profiled": name, **r}), flush=True)
    finally:
        local.down(settings, [local.GREMLIN])
    by = {s: [p for p in result["phases"] if p["shape"] == s] for s in shapes}

    def mean(shape: str, key: str) -> float:
        return sum(p[key] for p in by[shape]) / len(by[shape])

    for shape in by:
        result[f"mean_{shape}"] = {k: round(mean(shape, k), 3)
                                   for k in ("server_cpu_ms_per_event", "client_cpu_ms_per_event", "events_per_s")}
    result["old_over_new"] = {k: round(mean("old", k) / mean("new", k), 2)
                              for k in ("server_cpu_ms_per_event", "client_cpu_ms_per_event")}
    for shape in [s for s in by if s not in ("old", "new")]:
        result[f"old_over_{shape}_server_cpu"] = round(
            mean("old", "server_cpu_ms_per_event") / mean(shape, "server_cpu_ms_per_event"), 2)
    result["new_over_old_events_per_s"] = round(mean("new", "events_per_s") / mean("old", "events_per_s"), 2)
    result["same_graph"] = len({p["graph"]["sha256"] for p in result["phases"]}) == 1
    print(json.dumps({k: result[k] for k in ("old_over_new", "new_over_old_events_per_s", "same_graph")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
