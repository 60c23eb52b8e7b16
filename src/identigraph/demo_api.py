"""The demo's last stage: the real API over HTTP, asked about three customers a reviewer would pick.

The app runs under uvicorn in a thread of the demo process (so it uses the demo's settings, whatever ports
they name). It is called with the local admin key, which may also read identities: a scoring-only key gets
the decision and its reasons, not the evidence shown here.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console

from identigraph.services.process import free_port
from identigraph.config import Settings

LOCAL_EVIDENCE_KEY = "local-admin-key"  # score + identity:read; published in conf/serving.yaml, refused in production


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


def score_examples(settings: Settings, demo_dir: Path, truth: pd.DataFrame, console: Console) -> list[dict[str, Any]]:
    import uvicorn

    from identigraph.model.frame import read_snapshot
    from identigraph.serving.app import create_app
    from identigraph.serving.config import load_serving_config
    from identigraph.serving.server import uvicorn_options

    frame = read_snapshot(demo_dir / "snapshot")
    customers = frame.vertices["customer"]
    blocked = {i.removeprefix("customer:") for i in customers.index[customers["blocked"] == 1.0]}
    serving = load_serving_config()
    # The world ended months ago: score on its clock, not today's, or every recency feature is shifted.
    # A demo on a busy laptop is not a latency test: give the graph fetch room before "degraded".
    serving = serving.model_copy(update={"as_of": frame.as_of,
                                         "graph": serving.graph.model_copy(update={"timeout_s": 10.0})})
    app = create_app(settings, serving, demo_dir / "model")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_options(serving)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    out = []
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
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.service.close()
    return out
