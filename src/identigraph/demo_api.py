"""The demo's last stage: the real API over HTTP, asked about three customers a reviewer would pick, then the
review console with the cases that scoring sent it.

The app runs under uvicorn in a thread of the demo process (so it uses the demo's settings, whatever ports
they name). It is called with the local admin key, which may also read identities: a scoring-only key gets
the decision and its reasons, not the evidence shown here. The extra customers scored for the console go
through the local scoring key (the admin key's rate limit is sized for people, not batches).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console

from identigraph.config import Settings
from identigraph.graph.records import customer_key
from identigraph.services.process import free_port

LOCAL_EVIDENCE_KEY = "local-admin-key"  # score + identity:read; published in the packaged serving.yaml, refused in production
LOCAL_SCORING_KEY = "local-scoring-key"  # score only; published the same way
LOCAL_REVIEWER_KEY = "local-reviewer-key"  # the review console's sign-in; published the same way
REVIEW_CASES_WANTED = 5


def pick_examples(truth: pd.DataFrame, blocked: set[str]) -> dict[str, str]:
    """A ring member nobody blocked, an account-takeover victim, and a member of a legitimate household."""
    t = truth.assign(customer_id=truth["customer_id"].astype(str))
    picks: dict[str, str] = {}
    ring = t[(t["fraud_type"] == "ring") & ~t["customer_id"].isin(blocked)]
    if len(ring):
        picks["ring member (never blocked)"] = ring["customer_id"].iloc[0]
    ato = t[t["fraud_type"] == "ato"]
    if len(ato):
        picks["account-takeover victim"] = ato.sort_values("caught")["customer_id"].iloc[0]
    homes = t[(t["fraud_type"] == "none") & t["group_id"].astype(str).str.startswith("hh")]
    if len(homes):
        big = homes.groupby("group_id")["customer_id"].transform("size")
        picks["household member (legitimate)"] = homes[big == big.max()]["customer_id"].iloc[0]
    return picks


def ring_device(frame: Any, blocked: set[str]) -> str | None:
    """The device most blocked customers share (a fraud ring's phone or emulator), as a caller would send it."""
    edges = frame.edges.get(("customer", "has_device", "device"))
    if edges is None or edges.empty:
        return None
    links = edges[["src", "dst"]].drop_duplicates()
    on_blocked = links[links["src"].map(customer_key).isin(blocked)]
    if on_blocked.empty:
        return None
    return on_blocked["dst"].value_counts().index[0].removeprefix("device:")


def logins_from_ring_device(base: str, customers: pd.DataFrame, skip: set[str], device: str,
                            boundary: float) -> list[dict[str, Any]]:
    """A few of the most valuable unblocked customers (none of ``skip``) log in from that device: whatever the
    model says, the policy sends them to a person (a flag on a valuable customer is reviewed, not blocked,
    and a device shared with blocked accounts forces at least a review), so these are the cases a review
    team gets every day."""
    ltv = customers["lifetime_value"].rename(customer_key).astype(float)
    rich = ltv[(ltv >= boundary) & ~ltv.index.isin(skip)].sort_values(ascending=False)
    batch = [{"customer_id": c, "action": "login", "identifiers": {"device_id": device}}
             for c in rich.index[:REVIEW_CASES_WANTED]]
    if not batch:
        return []
    r = httpx.post(f"{base}/v1/score:batch", json={"requests": batch}, headers={"X-API-Key": LOCAL_SCORING_KEY},
                   timeout=120)
    r.raise_for_status()
    return r.json()["results"]


def wait_for_cases(store: Any, case_ids: list[str], timeout_s: float = 15.0) -> int:
    """How many of these cases the console's intake has put in its store, waiting at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        arrived = sum(store.case(c) is not None for c in case_ids)
        if arrived == len(case_ids) or time.monotonic() > deadline:
            return arrived
        time.sleep(0.2)


def score_examples(settings: Settings, demo_dir: Path, truth: pd.DataFrame, console: Console,
                   keep_running: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The three examples' decisions, and the console's state: its URL, the cases sent and arrived, the open ones.
    ``keep_running``: serve until Ctrl-C before shutting down."""
    import uvicorn

    from identigraph.model.frame import read_snapshot
    from identigraph.serving.app import create_app
    from identigraph.serving.config import load_serving_config
    from identigraph.serving.server import uvicorn_options

    frame = read_snapshot(demo_dir / "snapshot")
    customers = frame.vertices["customer"]
    blocked = {customer_key(i) for i in customers.index[customers["blocked"] == 1.0]}
    serving = load_serving_config()
    # The console's store lives with the demo's world, which every run regenerates: it starts empty too.
    store_file = demo_dir / "review-console.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_file}{suffix}").unlink(missing_ok=True)
    # The world ended months ago: score on its clock, not today's, or every recency feature is shifted.
    # A demo on a busy laptop is not a latency test: give the graph fetch room before "degraded".
    serving = serving.model_copy(update={"as_of": frame.as_of,
                                         "graph": serving.graph.model_copy(update={"timeout_s": 10.0}),
                                         "console": serving.console.model_copy(update={"store_file": store_file})})
    app = create_app(settings, serving, demo_dir / "model")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_options(serving)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    out = []
    review: dict[str, Any] = {"url": None, "sent": 0, "arrived": 0, "open": 0}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the API did not become ready within 60 s")
        console.print(f"  API ready on {base} (POST /v1/score with X-API-Key)")
        for who, cid in pick_examples(truth, blocked).items():
            r = httpx.post(f"{base}/v1/score", json={"customer_id": cid, "explain": True},
                           headers={"X-API-Key": LOCAL_EVIDENCE_KEY}, timeout=30)
            r.raise_for_status()
            body = r.json()
            out.append({"who": who, **body})
            score = "n/a" if body["score"] is None else f"{body['score']:.3f}"
            console.print(f"\n  [bold]{who}[/] {cid}: score {score} → [bold]{body['decision'].upper()}[/]"
                          f"{' (degraded)' if body['degraded'] else ''}")
            for reason in body["reasons"]:
                console.print(f"    reason: {reason}")
            for ev in body["explanation"]["evidence"][:3]:
                console.print(f"    evidence: {ev['text']}")
            for c in (body["explanation"].get("connections") or [])[:3]:
                console.print(f"    impact {c['impact_norm']:+.2f}  {c['relation']} {c['identifier_id'][:40]}")
        review = show_console(app, base, frame, blocked, serving, out, console)
        if keep_running:
            console.print(f"\n  the API and the console stay up on {base}: Ctrl-C to stop them")
            try:
                while thread.is_alive():
                    thread.join(0.5)
            except KeyboardInterrupt:
                console.print("  stopping the API")
        elif review["url"]:
            console.print("  (the API and the console stop with the demo: `identigraph demo --keep-running` "
                          "leaves them up)")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.service.close()
    return out, review


def show_console(app: Any, base: str, frame: Any, blocked: set[str], serving: Any, decisions: list[dict[str, Any]],
                 console: Console) -> dict[str, Any]:
    """Score a few customers bound for review, wait for their cases in the console, say where it is."""
    from identigraph.terminal import stage_rule

    console.print(stage_rule("9. the review console: cases sent to people"))
    review: dict[str, Any] = {"url": None, "sent": 0, "arrived": 0, "open": 0}
    reviewer = getattr(app.state, "review_console", None)
    if reviewer is None:
        console.print("  the review console is off (console.enabled in the serving configuration): no cases to show")
        return review
    device = ring_device(frame, blocked)
    # the examples' customers are not scored again: within the review window a second case is a duplicate
    logins = [] if device is None else logins_from_ring_device(
        base, frame.vertices["customer"], blocked | {d["customer_id"] for d in decisions}, device,
        serving.policy.lifetime_value_boundary)
    # a non-degraded review of a customer not seen this window is queued (serving.review.ReviewGate)
    case_ids = [d["request_id"] for d in [*decisions, *logins] if d["decision"] == "review" and not d["degraded"]]
    arrived = wait_for_cases(reviewer.store, case_ids)
    review.update(url=f"{base}/review", sent=len(case_ids), arrived=arrived,
                  open=reviewer.store.counts().get("open", 0))
    if logins:
        decided = pd.Series([d["decision"] for d in logins]).value_counts()
        console.print(f"  {len(logins)} valuable customers log in from the device most blocked accounts share: "
                      + ", ".join(f"{n} {k}" for k, n in decided.items()))
    console.print(f"  {len(case_ids)} review cases sent to the queue, {arrived} of them taken into the console's store")
    if review["open"]:
        console.print(f"  review console: [bold]{review['url']}[/] — sign in with the key {LOCAL_REVIEWER_KEY}; "
                      f"{review['open']} cases waiting")
    else:
        console.print(f"  review console: {review['url']} — no case arrived, the queue is empty")
    return review
