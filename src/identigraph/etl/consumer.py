"""The stream consumer: SQS events → graph, exactly once in effect, nothing acknowledged ever lost.

A message is deleted only once its effect is durable: at commit on Neptune, and on the local TinkerGraph once a
checkpoint holds the commit (``services.local.checkpoint_covers``). Until then the consumer holds it, and a
heartbeat keeps every held message invisible, so a slow write, a graph outage or a wait for the next
checkpoint never lets SQS hand it to someone else. If the local server restarts from a checkpoint older than a
held commit, that batch is written again (writes are idempotent: the graph de-duplicates by event).

Threads: receivers long-poll SQS into a staging queue (pausing at ``stream.max_in_flight`` held messages); the
main thread folds up to ``stream.batch_max`` messages (or what ``stream.batch_wait_ms`` brings) into one graph
transaction; an acker deletes what is durable; a heartbeat extends visibility; deletes, visibility changes and
DLQ sends run on a small pool. Every SQS call rides out errors (an ElasticMQ restart) with backoff.

Only poison reaches the dead-letter queue, always with a ``reason``: unparseable messages; an event id already
applied with another body (``conflict``); an event older than its customer's de-duplication window (``floor``);
an event the graph refuses deterministically, found by splitting the batch, with the server's message. The DLQ
is FIFO and each message is sent with its source MessageId as deduplication id, then deleted: a crash in between
resends the same id, which SQS drops within its 5-minute deduplication window. A redelivery later than that is
dead-lettered again, so the DLQ is read per source message (``identigraph dlq``: ``etl.dead_letters``). The
broker's own redrive is not used: every receive counts towards it (outages, kills, releases), and it would move
valid events without a reason.

A message may carry several events (``etl.packing``): each is handled as a message of its own would be, and
the message is deleted once all of them are durable or dead-lettered.

SIGTERM/SIGINT: stop receiving, finish the batch in hand, release what was received but not written, wait for
the checkpoint that makes the written batches durable, delete them, exit.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from identigraph import logs
from identigraph.config import Settings
from identigraph.errors import GraphError, GraphTimeout, PoisonMessage
from identigraph.etl import dead_letters as dead_kinds
from identigraph.etl.packing import unpack
from identigraph.etl.publish import SQS_BATCH, sqs_client
from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import CONFLICT, DUPLICATE, FLOOR, NEW, StreamWriter
from identigraph.graph.client import GraphClient, is_connection_error, is_transient

log = logging.getLogger("identigraph.consumer")


def prepare_process() -> None:
    """Where the consumer runs as a service (``identigraph consume``): its logs as JSON lines on stderr."""
    logs.configure(log.name)
# Test and benchmark hook: "after_commit:3" SIGKILLs this process the 3rd time it passes that point.
FAULT_ENV = "IDENTIGRAPH_STREAM_KILL_AT"


@dataclass
class ConsumerStats:
    """What one consumer run did, counted so a drain or a test can check nothing was lost or applied twice."""
    received: int = 0  # events (a packed message holds several)
    messages: int = 0  # SQS messages received
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    batches: int = 0
    graph_retries: int = 0  # writes retried after the graph was unavailable
    conflicts: int = 0  # transaction conflicts the client retried
    rewrites: int = 0  # batches written again after the local server restarted from an older checkpoint
    splits: int = 0  # batches split to find an event the graph refuses
    sqs_errors: int = 0
    released: int = 0
    dead_by_kind: dict[str, int] = field(default_factory=dict)


class Metrics:
    """The consumer's Prometheus series, on a registry of its own so several consumers in one process do not
    collide."""
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("identigraph_stream_received", "events received", registry=r)
        self.written = Counter("identigraph_stream_written", "events applied to the graph", registry=r)
        self.duplicates = Counter("identigraph_stream_duplicates", "events already applied (redeliveries)", registry=r)
        self.dead = Counter("identigraph_stream_dead_lettered", "messages moved to the DLQ, by kind", ["kind"], registry=r)
        self.retried = Counter("identigraph_stream_graph_retries", "writes retried while the graph was unavailable",
                               registry=r)
        self.conflicts = Counter("identigraph_stream_conflicts", "transaction conflicts retried", registry=r)
        self.rewrites = Counter("identigraph_stream_rewrites", "batches re-written after a graph restart", registry=r)
        self.sqs_errors = Counter("identigraph_stream_sqs_errors", "SQS calls that failed and were retried",
                                  ["call"], registry=r)
        self.latency = Histogram("identigraph_stream_batch_seconds", "graph write time per batch", registry=r)
        self.to_graph = Histogram("identigraph_stream_queue_to_graph_seconds", "SQS send to graph commit, per event",
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.lag = Gauge("identigraph_stream_lag_seconds", "age of the oldest message in the last batch", registry=r)
        self.held = Gauge("identigraph_stream_held", "messages received and not yet deleted", registry=r)
        self.awaiting = Gauge("identigraph_stream_awaiting_checkpoint", "written messages waiting to be durable",
                              registry=r)


@dataclass
class _Batch:
    messages: list[dict[str, Any]]
    events: list[Any]
    boot_id: str | None
    committed_at_ms: int


def _fault_plan() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    return point, int(nth or 1)


class Consumer:
    """SQS events into the graph, exactly once in effect: a message is deleted only after its write is durable."""
    def __init__(self, settings: Settings, client: GraphClient | None = None, sqs: Any = None,
                 writer: StreamWriter | None = None) -> None:
        from identigraph.graph import pseudonym

        self.settings = settings
        cfg = settings.stream
        self.cfg = cfg
        self.client = client or GraphClient(settings)
        self.sqs = sqs or sqs_client(settings, pool=cfg.receivers + cfg.sqs_workers + 4)
        self.writer = writer or StreamWriter(self.client, pseudonym.from_settings(settings))
        self.visibility = settings.queues.visibility_timeout_s
        self.wait_s = cfg.wait_s
        self.durable_on_commit = settings.graph.kind == "neptune"
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.stats = ConsumerStats()
        self.metrics = Metrics()
        give_up = time.monotonic() + 120  # a queue that stays unreachable at start-up is a configuration error
        urls = [self._retry("get_queue_url", functools.partial(self.sqs.get_queue_url, QueueName=name),
                            until=lambda: time.monotonic() > give_up)
                for name in (settings.queues.events, settings.queues.dead_letter)]
        if None in urls:
            raise RuntimeError(f"SQS queues {settings.queues.events}/{settings.queues.dead_letter} unreachable at "
                               f"{settings.queue_endpoint or 'AWS'} for 120 s")
        self.url, self.dlq_url = (u["QueueUrl"] for u in urls)
        self.latencies: list[float] | None = None  # set to [] to keep every event's queue-to-graph seconds
        self.latency_log: Any = None  # a text file: one "sent_ms commit_ms" line per event
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, Any]] = {}  # receipt handle -> message
        self._deadline: dict[str, float] = {}  # receipt handle -> monotonic time its visibility runs out
        self._open: dict[str, set[str]] = {}  # receipt handle -> its events (unit ids) not yet durable or dead
        self._open_units = 0
        self._staged: queue.Queue[dict[str, Any]] = queue.Queue()
        self._awaiting: list[_Batch] = []  # written, not yet durable
        self._rewrite: queue.Queue[_Batch] = queue.Queue()
        self._receiving = threading.Event()
        self._empty_polls = 0
        self._fault = _fault_plan()
        self._fault_seen: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=cfg.sqs_workers, thread_name_prefix="sqs")
        # extensions never wait behind a round of deletes: a late one lets SQS hand the message to someone else
        self._heartbeat_pool = ThreadPoolExecutor(max_workers=max(2, cfg.sqs_workers // 2), thread_name_prefix="hb")
        # held messages are extended to twice the visibility timeout: a round of extensions costs one call per
        # 10 messages, and what a crashed consumer held reappears within that time
        self.hold_s = 2 * self.visibility

    # ---- plumbing -------------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info("draining", extra={"signal": signal.Signals(signum).name})
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _at(self, point: str) -> None:
        if self._fault and self._fault[0] == point:
            self._fault_seen[point] = self._fault_seen.get(point, 0) + 1
            if self._fault_seen[point] == self._fault[1]:
                log.warning("fault_injected", extra={"point": point})
                os.kill(os.getpid(), signal.SIGKILL)

    def _retry(self, call: str, fn: Callable[[], Any], until: Callable[[], bool] | None = None) -> Any:
        """An SQS call, retried with backoff until it answers (or ``until`` says to give up: returns None)."""
        backoff = 0.2
        while True:
            try:
                return fn()
            except Exception as exc:  # botocore raises many types; a queue restart surfaces as any of them
                if _sender_fault(exc):
                    raise
                self.stats.sqs_errors += 1
                self.metrics.sqs_errors.labels(call=call).inc()
                self.ready.clear()
                log.warning("sqs_unavailable", extra={"call": call, "error": str(exc)[:200],
                                                      "backoff_s": round(backoff, 2)})
                if until is not None and until():
                    return None
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _batched(self, call: str, messages: list[dict[str, Any]], entry: Callable[[str, dict[str, Any]], dict],
                 send: Callable[[list[dict]], dict], pool: ThreadPoolExecutor | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run a 10-entry batch call over ``messages``, the chunks in parallel on the SQS pool: (succeeded,
        rejected for good). Failed entries that are not the sender's fault are retried."""

        def chunk(part: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            done: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []
            pending = {str(i): m for i, m in enumerate(part)}
            backoff = 0.2
            while pending:
                resp = self._retry(call, lambda: send([entry(i, m) for i, m in pending.items()]))
                for ok in resp.get("Successful", []):
                    done.append(pending.pop(ok["Id"]))
                for bad in resp.get("Failed", []):
                    if bad.get("SenderFault"):
                        rejected.append(pending.pop(bad["Id"]))
                if pending:
                    self.stats.sqs_errors += 1
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            return done, rejected

        parts = [messages[i:i + SQS_BATCH] for i in range(0, len(messages), SQS_BATCH)]
        results = [chunk(parts[0])] if len(parts) == 1 else list((pool or self._pool).map(chunk, parts))
        return [m for d, _ in results for m in d], [m for _, r in results for m in r]

    def _hold(self, messages: list[dict[str, Any]], units: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.visibility
        with self._lock:
            for m in messages:
                self._held[m["ReceiptHandle"]] = m
                self._deadline[m["ReceiptHandle"]] = deadline
            for u in units:
                self._open.setdefault(u["ReceiptHandle"], set()).add(u["MessageId"])
            self._open_units += len(units)
            self.metrics.held.set(self._open_units)

    def _forget(self, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m["ReceiptHandle"], None)
                self._deadline.pop(m["ReceiptHandle"], None)
                self._open_units -= len(self._open.pop(m["ReceiptHandle"], ()))
            self.metrics.held.set(self._open_units)

    def held(self) -> int:
        """Events received and not yet deleted (what ``stream.max_in_flight`` bounds)."""
        with self._lock:
            return self._open_units

    # ---- SQS operations -------------------------------------------------------------------------------------
    def _delete(self, units: list[dict[str, Any]]) -> None:
        """Close these events; delete each message whose events are all closed. A message handed back (released)
        is no longer tracked and never deleted here: its redelivery carries its events again."""
        messages = []
        with self._lock:
            for u in units:
                left = self._open.get(u["ReceiptHandle"])
                if left is None or u["MessageId"] not in left:
                    continue
                left.discard(u["MessageId"])
                self._open_units -= 1
                if not left:
                    messages.append(self._held[u["ReceiptHandle"]])
        if not messages:
            return
        done, rejected = self._batched(
            "delete", messages, lambda i, m: {"Id": i, "ReceiptHandle": m["ReceiptHandle"]},
            lambda entries: self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries))
        if rejected:  # the receipt went stale (e.g. the queue restarted): it comes back and is found applied
            log.warning("delete_rejected", extra={"count": len(rejected)})
        with self._lock:
            self.stats.deleted += len(done)
        self._forget(messages)

    def _set_visibility(self, messages: list[dict[str, Any]], seconds: int,
                        pool: ThreadPoolExecutor | None = None) -> None:
        done, _ = self._batched(
            "visibility", messages,
            lambda i, m: {"Id": i, "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds},
            lambda entries: self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries), pool)
        deadline = time.monotonic() + seconds
        with self._lock:
            for m in done:
                if m["ReceiptHandle"] in self._deadline:
                    self._deadline[m["ReceiptHandle"]] = deadline

    def _release(self, units: list[dict[str, Any]]) -> None:
        """Hand the messages of these events back for immediate redelivery (received but not written, or written
        but not durable), with all their events: those already applied come back as duplicates."""
        if not units:
            return
        with self._lock:
            messages = list({u["ReceiptHandle"]: self._held[u["ReceiptHandle"]] for u in units
                             if u["ReceiptHandle"] in self._held}.values())
            for m in messages:  # from here no sibling's delete reaches the message
                self._open_units -= len(self._open.pop(m["ReceiptHandle"], ()))
        self._set_visibility(messages, 0)
        self.stats.released += len(units)
        self._forget(messages)

    def _dead_letter(self, message: dict[str, Any], kind: str, reason: str) -> None:
        attrs = {
            "reason": {"DataType": "String", "StringValue": reason[:4000]},
            "kind": {"DataType": "String", "StringValue": kind},
            "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
            "receive_count": {"DataType": "Number",
                              "StringValue": str(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))},
        }
        # a group of its own per send: a second copy (a resend after FIFO's deduplication window) in the group
        # of the first would stay hidden from a reader holding the first (see identigraph.etl.dead_letters)
        group = f"{message['MessageId']}.{uuid.uuid4().hex[:12]}"
        self._retry("dead_letter", lambda: self.sqs.send_message(
            QueueUrl=self.dlq_url, MessageBody=message["Body"], MessageAttributes=attrs,
            MessageGroupId=group, MessageDeduplicationId=message["MessageId"]))
        self._at("after_dlq_send")
        self._delete([message])
        with self._lock:
            self.stats.dead_lettered += 1
            self.stats.dead_by_kind[kind] = self.stats.dead_by_kind.get(kind, 0) + 1
        self.metrics.dead.labels(kind=kind).inc()
        # a graph server's message can echo the values it refused (IPs, device ids: personal data); it stays in
        # the DLQ, with the body it describes, and is read there (``identigraph dlq list``)
        shown = "withheld from the log, see the DLQ" if kind == dead_kinds.REFUSED else reason[:300]
        log.info("dead_lettered", extra={"message_id": message["MessageId"], "kind": kind, "reason": shown})

    # ---- threads --------------------------------------------------------------------------------------------
    def _receiver(self, wait_s: int) -> None:
        while self._receiving.is_set():
            # two batches ahead of the writer is enough to keep it busy; more would only be held (and extended)
            if self.held() >= self.cfg.max_in_flight or self._staged.qsize() >= 2 * self.cfg.batch_max:
                time.sleep(0.05)
                continue
            got = self._retry("receive", lambda: self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s,
                VisibilityTimeout=self.visibility, AttributeNames=["SentTimestamp", "ApproximateReceiveCount"]),
                until=lambda: not self._receiving.is_set())
            if got is None:
                return
            messages = got.get("Messages", [])
            if not messages:
                with self._lock:
                    self._empty_polls += 1
                continue
            units = [u for m in messages for u in _units(m)]
            self._hold(messages, units)
            with self._lock:
                self._empty_polls = 0
                self.stats.received += len(units)
                self.stats.messages += len(messages)
            self.metrics.received.inc(len(units))
            for u in units:
                self._staged.put(u)

    def _heartbeat(self) -> None:
        """Keep every held message invisible: those within 3/4 of a visibility timeout of reappearing are
        extended by ``hold_s``, on a pool of their own."""
        step = max(0.2, self.visibility / 8)
        while not self._heartbeat_stop.wait(step):
            soon = time.monotonic() + 0.75 * self.visibility
            with self._lock:
                due = [self._held[h] for h, d in self._deadline.items() if d < soon and h in self._held]
            if due:
                self._set_visibility(due, self.hold_s, self._heartbeat_pool)

    def _acker(self) -> None:
        from identigraph.services import local

        while not self._acker_stop.wait(0.1):
            with self._lock:
                batches, self._awaiting = self._awaiting, []
            if not batches:
                continue
            latest, boot = local.latest_checkpoint(self.settings), local.boot_info(self.settings)
            current = (boot or {}).get("boot_id")
            keep: list[_Batch] = []
            durable: list[dict[str, Any]] = []
            for b in batches:
                if local.checkpoint_covers(latest, boot, b.boot_id or "", b.committed_at_ms):
                    durable += b.messages
                elif current and current != b.boot_id:
                    # the server restarted from a checkpoint that predates this commit: write it again
                    self._rewrite.put(b)
                    with self._lock:
                        self.stats.rewrites += 1
                    self.metrics.rewrites.inc()
                    log.warning("rewrite_after_graph_restart", extra={"messages": len(b.messages)})
                else:
                    keep.append(b)
            with self._lock:
                self._awaiting = keep + self._awaiting
                self.metrics.awaiting.set(sum(len(b.messages) for b in self._awaiting))
            if durable:
                self._delete(durable)

    # ---- the write path -------------------------------------------------------------------------------------
    def _write(self, messages: list[dict[str, Any]], events: list[Any]) -> None:
        """Write until it succeeds (graph down: back off, messages stay held) or stop; split on refusal."""
        backoff = 0.5
        while True:
            try:
                before = self._boot()
                with self.metrics.latency.time():
                    result = self.writer.write(events)
                boot = self._boot()
                if boot != before:  # the server restarted around this write: which one holds it is unknown
                    raise ConnectionError("the graph server restarted during the write")
                break
            except Exception as exc:
                if isinstance(exc, GraphError) and not _unavailable(exc):
                    self._split(messages, events, exc)
                    return
                if not (isinstance(exc, GraphError) or is_connection_error(exc)):
                    raise
                self.stats.graph_retries += 1
                self.metrics.retried.inc()
                self.ready.clear()
                log.warning("graph_unavailable", extra={"error": str(exc)[:200], "backoff_s": backoff})
                if self.stop.wait(backoff):
                    # draining with the graph down: the messages go back to the queue for whoever is up
                    self._release(messages)
                    raise GraphError(f"stopped while the graph was unavailable: {str(exc)[:200]}") from exc
                backoff = min(backoff * 2, 15.0)
        now_ms = result.committed_at_ms
        # queue-to-graph of the events this write applied (a redelivery's age says nothing about the path), noted
        # before anything else: an event applied here and redelivered after a crash is a duplicate, never noted again
        sent = [int(m.get("Attributes", {}).get("SentTimestamp", now_ms))
                for m, o in zip(messages, result.outcomes, strict=True) if o == NEW]
        for s in sent:
            self.metrics.to_graph.observe(max(0.0, (now_ms - s) / 1000))
        if self.latencies is not None:
            self.latencies.extend((now_ms - s) / 1000 for s in sent)
        if self.latency_log is not None and sent:
            self.latency_log.write("".join(f"{s} {now_ms}\n" for s in sent))
            self.latency_log.flush()
        self._at("after_commit")
        self.ready.set()
        self.stats.conflicts += result.conflicts
        self.metrics.conflicts.inc(result.conflicts)
        keep_msgs, keep_events = [], []
        for m, e, outcome in zip(messages, events, result.outcomes, strict=True):
            if outcome in (NEW, DUPLICATE):
                keep_msgs.append(m)
                keep_events.append(e)
                self.stats.applied += outcome == NEW
                self.stats.duplicates += outcome == DUPLICATE
            elif outcome == CONFLICT:
                self._dead_letter(m, dead_kinds.CONFLICT,
                                  f"event_id {e.event_id!r} was already applied with a different body;"
                                  " this one was not applied")
            elif outcome == FLOOR:
                self._dead_letter(m, dead_kinds.FLOOR,
                                  f"event {e.event_id!r} (occurred_at {e.occurred_at.isoformat()}) is "
                                  f"older than the {self.writer.window} newest events de-duplication remembers for "
                                  f"customer {e.customer_id!r}: applying it could count it twice; not applied")
        self.metrics.written.inc(result.applied)
        self.metrics.duplicates.inc(result.duplicates)
        if keep_msgs:
            batch = _Batch(keep_msgs, keep_events, boot, result.committed_at_ms)
            if self.durable_on_commit:
                self._delete(keep_msgs)
            else:
                with self._lock:
                    self._awaiting.append(batch)

    def _split(self, messages: list[dict[str, Any]], events: list[Any], exc: Exception) -> None:
        """The graph refused the batch: halve it until the events it refuses are alone, dead-letter those."""
        if len(events) == 1:
            if not self._graph_answers():
                raise GraphError(f"graph unavailable while isolating a refused event: {exc}") from exc
            cause = exc.__cause__ or exc
            self._dead_letter(messages[0], dead_kinds.REFUSED, f"the graph refused this event: {str(cause)[:3000]}")
            return
        self.stats.splits += 1
        mid = len(events) // 2
        log.warning("graph_refused_batch", extra={"size": len(events), "error": str(exc)[:200]})
        self._write(messages[:mid], events[:mid])
        self._write(messages[mid:], events[mid:])

    def _boot(self) -> str | None:
        """The local server instance now serving (its start-up script writes boot.json before it serves)."""
        if self.durable_on_commit:
            return None
        from identigraph.services import local

        return (local.boot_info(self.settings) or {}).get("boot_id")

    def _graph_answers(self) -> bool:
        try:
            return self.client.submit(lambda g: g.inject(1), "next", deadline=time.monotonic() + 5) == 1
        except Exception:
            return False

    def process(self, messages: list[dict[str, Any]]) -> None:
        oldest = min((int(m.get("Attributes", {}).get("SentTimestamp", 0)) for m in messages), default=0)
        if oldest:
            self.metrics.lag.set(max(0.0, time.time() - oldest / 1000))
        good, events = [], []
        for m in messages:
            try:
                if "Poison" in m:
                    raise PoisonMessage(m["Poison"])
                events.append(parse_message(m["Body"]))
                good.append(m)
            except PoisonMessage as exc:
                self._dead_letter(m, dead_kinds.POISON, str(exc))
        if events:
            self._write(good, events)
        self.stats.batches += 1

    def _next_batch(self) -> list[dict[str, Any]]:
        try:
            first = self._staged.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        until = time.monotonic() + self.cfg.batch_wait_ms / 1000
        while len(batch) < self.cfg.batch_max:
            left = until - time.monotonic()
            try:
                batch.append(self._staged.get(timeout=left) if left > 0 else self._staged.get_nowait())
            except queue.Empty:
                break
        return batch

    def _drained(self) -> bool:
        with self._lock:
            idle = self._empty_polls >= self.cfg.receivers and not self._awaiting
        return idle and self._staged.empty() and self._rewrite.empty()

    def _wait_for_graph(self) -> None:
        """Take no message before the graph answers (a restarting graph server is not a reason to exit)."""
        backoff = 0.5
        while not self._graph_answers():
            log.warning("graph_unavailable_at_start", extra={"backoff_s": backoff})
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, 10.0)

    def run(self, until_empty: bool = False, max_messages: int | None = None) -> ConsumerStats:
        self._wait_for_graph()
        if not self.durable_on_commit:
            self._check_checkpointer()
        self.ready.set()
        wait = 1 if until_empty else self.wait_s
        self._receiving.set()
        self._heartbeat_stop, self._acker_stop = threading.Event(), threading.Event()
        receivers = [threading.Thread(target=self._receiver, args=(wait,), daemon=True, name=f"receive-{i}")
                     for i in range(self.cfg.receivers)]
        helpers = [threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat"),
                   threading.Thread(target=self._acker, daemon=True, name="acker")]
        for t in receivers + helpers:
            t.start()
        taken = 0
        try:
            while not self.stop.is_set():
                try:
                    b = self._rewrite.get_nowait()
                    self._write(b.messages, b.events)
                    continue
                except queue.Empty:
                    pass
                messages = self._next_batch()
                if messages:
                    taken += len(messages)
                    self.process(messages)
                    if max_messages is not None and taken >= max_messages:
                        break
                elif until_empty and self._drained():
                    break
        finally:
            self._receiving.clear()
            for t in receivers:
                t.join(timeout=wait + 5)
            leftover = []
            while not self._staged.empty():
                leftover.append(self._staged.get_nowait())
            self._release(leftover)
            self._await_durable()
            self._acker_stop.set()
            self._heartbeat_stop.set()
            for t in helpers:
                t.join(timeout=30)
        log.info("stopped", extra=asdict(self.stats))
        return self.stats

    def _await_durable(self) -> None:
        """On the way out: the written batches become durable with the next checkpoint; wait for it, bounded,
        then release whatever is still waiting (another consumer finds it applied and acknowledges it)."""
        gs = self.settings.services.gremlin
        deadline = time.monotonic() + 3 * gs.checkpoint_interval_s + 30
        while time.monotonic() < deadline:
            with self._lock:
                waiting = bool(self._awaiting) or not self._rewrite.empty()
            if not waiting:
                return
            try:
                b = self._rewrite.get_nowait()
                self._write(b.messages, b.events)
            except queue.Empty:
                time.sleep(0.1)
            except GraphError:
                break
        with self._lock:
            rest, self._awaiting = self._awaiting, []
        while not self._rewrite.empty():
            rest.append(self._rewrite.get_nowait())
        self._release([m for b in rest for m in b.messages])

    def _check_checkpointer(self) -> None:
        from identigraph.services import local

        if local.boot_info(self.settings) is None:
            raise GraphError(f"no checkpoint metadata in {local.checkpoint_dir(self.settings)}: the consumer "
                             f"acknowledges a message once a checkpoint of the local graph holds it, so it must run "
                             f"with the data directory of the Gremlin Server it writes to ('identigraph services "
                             f"up'), or against Neptune (graph.kind: neptune)")


def _units(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a message carries, each shaped like a message of its own (``etl.packing``): an envelope's
    element ``i`` gets the id ``<MessageId>:<i>``, which is also its source id in the DLQ."""
    try:
        parts = unpack(message["Body"])
    except PoisonMessage as exc:
        return [{**message, "Poison": str(exc)}]
    if parts is None:
        return [message]
    mid = message["MessageId"]
    return [{**message, "MessageId": f"{mid}:{i}", "Body": b} for i, b in enumerate(parts)]


def _sender_fault(exc: BaseException) -> bool:
    """An SQS error no retry fixes (a bad request), as opposed to the queue being unreachable or busy."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # a restarting ElasticMQ answers for a moment before it has re-created its queues
    transient = ("Throttl", "RequestThrottled", "ServiceUnavailable", "InternalError", "OverLimit", "KMS",
                 "NonExistentQueue", "QueueDoesNotExist")
    if any(t in code for t in transient):
        return False
    return 400 <= status < 500


def _unavailable(exc: GraphError) -> bool:
    """A graph error that says nothing about the events: conflicts, throttling, time-outs, a missing source."""
    cause = exc.__cause__
    text = str(exc)
    if isinstance(exc, GraphTimeout) or (cause is not None and is_transient(cause)):
        return True
    return any(m in text for m in ("598", "imed out", "timeout", "not configured", "not applied after",
                                   "stopped while"))


def serve_health(consumer: Consumer, port: int) -> ThreadingHTTPServer:
    """``/healthz`` (process alive), ``/readyz`` (graph and queue answering), ``/metrics`` (Prometheus)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
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
