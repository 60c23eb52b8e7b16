"""The review console's test world and app: a small graph written through the stream writer, a queue of
its own, and the real app with the console on (cases come from the real scoring path). The app runs under
test_serving_api's LiveServer (uvicorn in a thread): the browser needs a real socket."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from identigraph.etl.publish import sqs_client
from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import StreamWriter
from identigraph.serving.auth import key_digest
from identigraph.serving.config import ServingConfig

NOW = datetime.now(timezone.utc)
HUB_IP = "10.9.0.1"
SEED_DEVICE = "dev-seed-0001"
HUB_CUSTOMERS = 25
KEYS = {"reviewer": ["review"], "senior": ["review", "identity:read"], "scorer": ["score"]}


def _event(kind: str, eid: str, customer: str, days_ago: float, **extra) -> object:
    return parse_message(__import__("json").dumps({
        "schema_version": 1, "event_type": kind, "event_id": eid, "customer_id": customer,
        "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(), **extra}))


def write_world(client, pseudo) -> None:
    """rc-seed (high value) shares its device and card with two matured fraudsters (blocked 150 days ago)
    and an IP with 25 others; rc-legit shares only the IP."""
    events = [_event("customer_created", "cc-seed", "rc-seed", 200, lifetime_value=950.0),
              _event("signup", "su-seed", "rc-seed", 200, device_id=SEED_DEVICE, ip=HUB_IP, card_fingerprint="k-seed-1"),
              _event("customer_created", "cc-legit", "rc-legit", 200, lifetime_value=400.0),
              _event("signup", "su-legit", "rc-legit", 200, ip=HUB_IP, device_id="dev-legit-1")]
    for i in (1, 2):
        c = f"rc-fraud{i}"
        events += [_event("customer_created", f"cc-{c}", c, 199, lifetime_value=10.0),
                   _event("signup", f"su-{c}", c, 199, device_id=SEED_DEVICE, card_fingerprint="k-seed-1"),
                   _event("block", f"bl-{c}", c, 150, reason="fraud", source="manual")]
    for i in range(HUB_CUSTOMERS):
        c = f"rc-hub{i:02d}"
        events += [_event("customer_created", f"cc-{c}", c, 180, lifetime_value=50.0),
                   _event("login", f"li-{c}", c, 180, ip=HUB_IP, device_id=f"dev-hub-{i:02d}")]
    StreamWriter(client, pseudo).write(events)


def review_queue(settings, name: str, visibility_s: int = 30):
    """A review queue of the test's own (other tests leave cases on the shared one)."""
    sqs = sqs_client(settings)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_s)})["QueueUrl"]
    sqs.purge_queue(QueueUrl=url)
    return settings.model_copy(update={"queues": settings.queues.model_copy(update={"review": name})}), sqs, url


def console_config(store: Path, **console) -> ServingConfig:
    keys = [{"id": name, "sha256": key_digest(f"{name}-secret"), "scopes": scopes,
             "rate_limit": {"per_second": 1000, "burst": 1000}} for name, scopes in KEYS.items()]
    return ServingConfig.model_validate({
        "api_keys": keys, "review": {"degraded": True},
        "console": {"enabled": True, "store_file": str(store), "poll_wait_s": 1, **console}})


def wait_for(pred, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
