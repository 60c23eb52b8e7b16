"""The stream consumer: SQS events → graph, exactly once in effect, nothing acknowledged lost.

Loop: long-poll up to ``receives`` × 10 messages into one graph batch; poison goes to the dead-letter
queue with its reason (then, and only then, is it deleted from the events queue); the rest goes through
the ``StreamWriter`` in one transaction; messages are deleted only after the graph write succeeded, and
deletes that SQS reports as failed are retried (one that still fails is harmless: the redelivery finds its
marker). The graph being down is not poison: the batch is kept — its visibility extended while the
consumer backs off — and written when the graph answers again. SIGTERM/SIGINT stop receiving, finish the
batch in hand, and exit.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from identigraph.config import Settings
from identigraph.etl.publish import SQS_BATCH, sqs_client
from identigraph.etl.stream_events import PoisonMessage, parse_message
from identigraph.etl.stream_writer import StreamWriter
from identigraph.graph.client import GraphClient, is_connection_error
from identigraph.errors import GraphError

log = logging.getLogger("identigraph.consumer")


@dataclass
class ConsumerStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    batches: int = 0
    graph_retries: int = 0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("identigraph_stream_received", "messages received", registry=r)
        self.written = Counter("identigraph_stream_written", "events applied to the graph", registry=r)
        self.duplicates = Counter("identigraph_stream_duplicates", "events already applied (redeliveries)", registry=r)
        self.dead = Counter("identigraph_stream_dead_lettered", "poison messages moved to the DLQ", registry=r)
        self.retried = Counter("identigraph_stream_graph_retries", "batches retried after a graph failure", registry=r)
        self.latency = Histogram("identigraph_stream_batch_seconds", "graph write time per batch", registry=r)
        self.lag = Gauge("identigraph_stream_lag_seconds", "age of the oldest message in the last batch", registry=r)


class Consumer:
    def __init__(self, settings: Settings, client: GraphClient | None = None, sqs: Any = None,
                 writer: StreamWriter | None = None) -> None:
        from identigraph.graph import pseudonym

        self.settings = settings
        self.client = client or GraphClient(settings)
        self.sqs = sqs or sqs_client(settings)
        self.writer = writer or StreamWriter(self.client, pseudonym.from_settings(settings))
        self.receives = settings.stream.receives_per_batch
        self.wait_s = settings.stream.wait_s
        self.url = self.sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
        self.dlq_url = self.sqs.get_queue_url(QueueName=settings.queues.dead_letter)["QueueUrl"]
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.stats = ConsumerStats()
        self.metrics = Metrics()
        self.latencies: list[float] | None = None  # set to [] to keep every event's queue-to-graph seconds

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info(json.dumps({"event": "draining", "signal": signal.Signals(signum).name}))
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _receive(self, wait_s: int, limit: int | None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for i in range(self.receives):
            if self.stop.is_set() or (limit is not None and len(messages) >= limit):
                break
            want = 10 if limit is None else max(1, min(10, limit - len(messages)))
            got = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=want, WaitTimeSeconds=wait_s if i == 0 else 0,
                AttributeNames=["SentTimestamp"], MessageAttributeNames=["All"]).get("Messages", [])
            messages += got
            if len(got) < want:
                break
        return messages

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            chunk = {str(i): m["ReceiptHandle"] for i, m in enumerate(messages[start:start + SQS_BATCH])}
            for _attempt in range(3):
                if not chunk:
                    break
                resp = self.sqs.delete_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": i, "ReceiptHandle": h} for i, h in chunk.items()])
                for ok in resp.get("Successful", []):
                    chunk.pop(ok["Id"], None)
                    self.stats.deleted += 1
            if chunk:  # still there: it will be redelivered and found applied by its marker
                log.warning(json.dumps({"event": "delete_failed", "count": len(chunk)}))

    def _set_visibility(self, messages: list[dict[str, Any]], seconds: int) -> None:
        """Extend (keep a batch while the graph is down) or release (0: hand prefetched messages back)."""
        for start in range(0, len(messages), SQS_BATCH):
            self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(messages[start:start + SQS_BATCH])])

    def _dead_letter(self, message: dict[str, Any], reason: str) -> None:
        self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"], MessageAttributes={
            "reason": {"DataType": "String", "StringValue": reason[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
        })
        self.stats.dead_lettered += 1
        self.metrics.dead.inc()
        log.info(json.dumps({"event": "dead_lettered", "message_id": message["MessageId"], "reason": reason}))

    def _write(self, messages: list[dict[str, Any]], events: list[Any]) -> None:
        """Write until it succeeds or we are told to stop; the messages stay invisible meanwhile."""
        backoff = 0.5
        while True:
            try:
                with self.metrics.latency.time():
                    result = self.writer.write(events)
                self.stats.applied += result.applied
                self.stats.duplicates += result.duplicates
                self.metrics.written.inc(result.applied)
                self.metrics.duplicates.inc(result.duplicates)
                return
            except Exception as exc:
                if not (isinstance(exc, GraphError) or is_connection_error(exc)):
                    raise
                self.stats.graph_retries += 1
                self.metrics.retried.inc()
                self.ready.clear()
                log.warning(json.dumps({"event": "graph_unavailable", "error": str(exc)[:200], "backoff_s": backoff}))
                if self.stop.wait(backoff):
                    # draining with the graph down: the messages stay unacknowledged and will reappear
                    raise GraphError(f"stopped while the graph was unavailable: {str(exc)[:200]}") from exc
                self._set_visibility(messages, self.settings.queues.visibility_timeout_s)
                backoff = min(backoff * 2, 15.0)

    def process(self, messages: list[dict[str, Any]]) -> None:
        self.stats.received += len(messages)
        self.metrics.received.inc(len(messages))
        oldest = min((int(m.get("Attributes", {}).get("SentTimestamp", 0)) for m in messages), default=0)
        if oldest:
            self.metrics.lag.set(max(0.0, time.time() - oldest / 1000))
        good, events, poison = [], [], []
        for m in messages:
            try:
                events.append(parse_message(m["Body"]))
                good.append(m)
            except PoisonMessage as exc:
                poison.append((m, str(exc)))
        for m, reason in poison:
            self._dead_letter(m, reason)
        if events:
            self._write(good, events)
            if self.latencies is not None:
                now = time.time()
                self.latencies.extend(now - int(m["Attributes"]["SentTimestamp"]) / 1000 for m in good)
        self._delete(good + [m for m, _ in poison])
        self.stats.batches += 1
        self.ready.set()

    def run(self, until_empty: bool = False, max_messages: int | None = None) -> ConsumerStats:
        """Receiving the next batch overlaps writing this one (SQS and the graph each take about half)."""
        self.client.submit(lambda g: g.inject(1), "next")  # reachable before we take messages
        self.ready.set()
        wait = 1 if until_empty else self.wait_s
        taken = 0

        def fetch() -> list[dict[str, Any]]:
            left = None if max_messages is None else max_messages - taken
            if (left is not None and left <= 0) or self.stop.is_set():
                return []
            return self._receive(wait, left)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="receive") as prefetch:
            pending = prefetch.submit(fetch)
            while True:
                messages = pending.result()
                taken += len(messages)
                if not messages:
                    if until_empty or self.stop.is_set() or (max_messages is not None and taken >= max_messages):
                        break
                    pending = prefetch.submit(fetch)
                    continue
                pending = prefetch.submit(fetch)
                self.process(messages)
                if self.stop.is_set():
                    # what the prefetch took is not processed: release it for redelivery right away
                    self._set_visibility(pending.result(), 0)
                    break
        log.info(json.dumps({"event": "stopped", **asdict(self.stats)}))
        return self.stats

def serve_health(consumer: Consumer, port: int) -> ThreadingHTTPServer:
    """``/healthz`` (process alive), ``/readyz`` (last batch reached the graph), ``/metrics`` (Prometheus)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif self.path == "/readyz":
                ok = consumer.ready.is_set()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            elif self.path == "/metrics":
                self._send(200, generate_latest(consumer.metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # access logs would drown the structured ones
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server
