"""The graph after streaming equals the graph a historical load of the same events builds: edges, customers'
history summaries and the identifier statistics (which the stream keeps incrementally, through blocks,
liftings and re-blocks, and the Spark job computes by aggregation)."""

import json
import random
from datetime import timedelta

import pandas as pd
import pytest

from identigraph.etl.graph_load import load_snapshot
from identigraph.etl.job import run_etl
from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import StreamWriter
from identigraph.graph import queries
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.synth import SynthParams, generate_world, write_world

pytestmark = pytest.mark.services
KEY = b"equivalence-key-0123456789abcdef"
IDENTITY = ("signup", "login", "add_payment_method", "profile_update", "booking")


def _iso(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _extra_history(world, rnd):
    """More blocks, lifts and care contacts than a 30-day window happens to hold, in the contract's shape."""
    end = pd.Timestamp(world.params.end)
    picked = rnd.sample(sorted(world.customers["customer_id"]), 12)
    out, n = [], 0
    for i, cid in enumerate(picked):
        base = end - timedelta(days=20) + timedelta(hours=i)
        def ev(kind, at, cid=cid, **more):
            nonlocal n
            n += 1
            return {"schema_version": 1, "event_id": f"hx{n:05d}", "event_type": kind, "customer_id": cid,
                    "occurred_at": _iso(at), **more}
        out.append(ev("block", base, reason=rnd.choice(["fraud", "abuse"]), source="rule", rule_name=f"r{i % 3}"))
        if i % 2 == 0:
            out.append(ev("unblock", base + timedelta(days=2)))
        if i % 3 == 0:
            out.append(ev("block", base + timedelta(days=5), reason="fraud", source="manual"))
        out.append(ev("care_contact", base + timedelta(days=1), topic="block_review" if i % 2 else "payment"))
    return out


def _as_tables(world, stream, out):
    """The historical-load view of tables + stream: every stream event written back into its table."""
    write_world(world, out, fmt="csv")
    tables = {n: pd.read_csv(out / f"{n}.csv", dtype=str, keep_default_na=False, na_values=[""])
              for n in ("customers", "identity_events", "blocks", "care_contacts")}
    rows = {n: [] for n in tables}
    for r in stream:
        kind = r["event_type"]
        if kind in IDENTITY:
            rows["identity_events"].append({k: r.get(k) for k in tables["identity_events"].columns})
        elif kind == "customer_created":
            rows["customers"].append({"customer_id": r["customer_id"], "created_at": r["occurred_at"],
                                      "country": r.get("country"), "lifetime_value": r.get("lifetime_value", 0)})
        elif kind == "block":
            rows["blocks"].append({"customer_id": r["customer_id"], "blocked_at": r["occurred_at"], "reason": r["reason"],
                                   "source": r["source"], "rule_name": r.get("rule_name"), "unblocked_at": None})
        elif kind == "care_contact":
            rows["care_contacts"].append({"customer_id": r["customer_id"], "contacted_at": r["occurred_at"],
                                          "topic": r["topic"]})
    for n in tables:
        tables[n] = pd.concat([tables[n], pd.DataFrame(rows[n], columns=tables[n].columns)], ignore_index=True)
    blocks = tables["blocks"]
    for r in stream:  # an unblock lifts the customer's latest block before it
        if r["event_type"] == "unblock":
            mine = blocks[(blocks.customer_id == r["customer_id"]) & (pd.to_datetime(blocks.blocked_at, utc=True)
                                                                       <= pd.Timestamp(r["occurred_at"]))]
            blocks.loc[pd.to_datetime(mine.blocked_at, utc=True).idxmax(), "unblocked_at"] = r["occurred_at"]
    for n, df in tables.items():
        df.to_csv(out / f"{n}.csv", index=False)


def _graph(client):
    """What a historical load holds: the stream's bookkeeping (labels starting with "_") left out."""
    vertices, edges = queries.dump(client)
    return [v for v in vertices if not v["label"].startswith("_")], edges


def test_stream_then_history_equals_historical_load_of_everything(spark, settings, graph, tmp_path):
    rnd = random.Random(3)
    world = generate_world(SynthParams(customers=300, seed=9, stream_days=30))
    stream = list(world.stream_records()) + _extra_history(world, rnd)
    as_of = _iso(world.params.end)

    everything = tmp_path / "everything"
    _as_tables(world, stream, everything)
    load_snapshot(spark, settings, _snap(spark, settings, everything, tmp_path / "s1", as_of))
    expected = _graph(graph)

    queries.clear(graph)
    tables_only = tmp_path / "tables"
    write_world(world, tables_only, fmt="csv")
    load_snapshot(spark, settings, _snap(spark, settings, tables_only, tmp_path / "s2", as_of))
    events = [parse_message(json.dumps(r)) for r in stream]
    delivered = events + rnd.sample(events, len(events) // 4)
    rnd.shuffle(delivered)
    writer = StreamWriter(graph, Pseudonymiser(KEY))
    for i in range(0, len(delivered), 25):
        writer.write(delivered[i:i + 25])
    got = _graph(graph)

    assert len(expected[0]) > 300 and len(expected[1]) > 500
    # the stream's history moved the statistics: blocks that flip customers, liftings that flip them back
    customers = [v for v in expected[0] if v["label"] == "customer"]
    assert any(v["blocked"] for v in customers) and any(v["n_blocks"] and not v["blocked"] for v in customers)
    identifiers = [v for v in expected[0] if v["label"] != "customer"]
    assert all("n_customers" in v for v in identifiers) and any(v["n_blocked"] for v in identifiers)
    assert any(v["n_contested"] for v in identifiers)
    assert {e["edge_id"]: e for e in got[1]} == {e["edge_id"]: e for e in expected[1]}
    assert {v["id"]: v for v in got[0]} == {v["id"]: v for v in expected[0]}


def _snap(spark, settings, src, out, as_of):
    run_etl(spark, settings, src, out, KEY, as_of=as_of)
    return out
