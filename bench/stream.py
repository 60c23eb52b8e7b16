"""The stream end to end — publish → ElasticMQ → consumer → Gremlin Server — measured in one run.

Usage: python bench/stream.py [--customers 20000] [--rate 500] [--seconds 20]

1. Sustained throughput: the world's stream events (replicated with fresh event ids until --backlog),
   published as a backlog, then consumed until the queue is empty: events/s.
2. Latency at a fixed offered rate: a publisher thread paces events at --rate while the consumer runs;
   per event, seconds from SQS's SentTimestamp to the end of the graph transaction that applied it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from identigraph.services.process import free_port
from identigraph.config import load_settings
from identigraph.etl.consumer import Consumer
from identigraph.etl.publish import publish, sqs_client
from identigraph.graph.client import GraphClient
from identigraph.services import local
from identigraph.synth import SynthParams, generate_world

REPO = Path(__file__).resolve().parents[1]


def _bodies(records: list[dict], n: int, tag: str) -> list[str]:
    out = []
    i = 0
    while len(out) < n:
        r = dict(records[i % len(records)])
        r["event_id"] = f"{tag}{i:08d}"  # fresh ids: every event is new work, not a duplicate
        out.append(json.dumps(r))
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--backlog", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stream.json")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="identigraph-bench-stream-"))
    settings = load_settings(REPO / "conf" / "identigraph.yaml", overrides={
        "data_dir": str(data),
        "services": {"gremlin": {"port": free_port()}, "elasticmq": {"port": free_port()}},
        "stream": {"wait_s": 1, "health_port": 0},
    })
    world = generate_world(SynthParams(customers=args.customers, seed=31, stream_days=14))
    records = list(world.stream_records())
    local.up(settings)
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                               f"Python {sys.version.split()[0]}",
                    "stream_records_in_world": len(records)}
    try:
        sqs = sqs_client(settings)
        url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
        with GraphClient(settings) as client:
            # 1. sustained: backlog then drain
            t0 = time.perf_counter()
            pub = publish(sqs, url, _bodies(records, args.backlog, "bk"))
            publish_s = time.perf_counter() - t0
            consumer = Consumer(settings, client=client, sqs=sqs)
            t0 = time.perf_counter()
            stats = consumer.run(until_empty=True)
            drain_s = time.perf_counter() - t0
            result["sustained"] = {"events": stats.applied, "seconds": round(drain_s, 2),
                                   "events_per_s": round(stats.applied / drain_s), "batches": stats.batches,
                                   "publish_events_per_s": round(pub.sent / publish_s)}
            print(json.dumps(result["sustained"]), flush=True)

            # 2. latency at a fixed offered rate
            consumer = Consumer(settings, client=client, sqs=sqs)
            consumer.latencies = []
            n = int(args.rate * args.seconds)
            done = threading.Event()

            def producer() -> None:
                publish(sqs, url, _bodies(records, n, "lt"), rate=args.rate)
                done.set()

            thread = threading.Thread(target=producer)
            thread.start()
            consumer_thread = threading.Thread(target=lambda: consumer.run())
            consumer_thread.start()
            done.wait()
            while consumer.stats.applied < n:
                time.sleep(0.2)
            consumer.stop.set()
            consumer_thread.join()
            lat = np.array(consumer.latencies)
            result["latency"] = {"offered_rate": args.rate, "events": int(lat.size),
                                 "p50_s": round(float(np.percentile(lat, 50)), 3),
                                 "p99_s": round(float(np.percentile(lat, 99)), 3),
                                 "max_s": round(float(lat.max()), 3), "batches": consumer.stats.batches}
            print(json.dumps(result["latency"]), flush=True)
    finally:
        local.down(settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
