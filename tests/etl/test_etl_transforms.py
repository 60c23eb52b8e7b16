"""Spark transforms on hand-made frames, held to exact outputs and to the Python path."""

from datetime import datetime, timezone

from pyspark.sql import functions as F

from identigraph.etl import contract
from identigraph.etl.transforms import (
    customer_vertices,
    history_at,
    identifier_vertices,
    identity_edges,
    normalise_ip,
    pseudonym_udf,
)
from identigraph.graph import schema
from identigraph.graph.pseudonym import Pseudonymiser

KEY = b"transform-test-key-0123456789"
UTC = timezone.utc


def _ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_spark_pseudonyms_equal_the_graph_layers(spark):
    from identigraph.errors import SchemaError

    p = Pseudonymiser(KEY)

    def python(fn, raw):
        try:
            return fn(raw) if raw is not None else None
        except SchemaError:
            return None

    emails = [" Jane.Doe@Example.com ", "bad-email", "@x", "x@", None, "x@y.z", "\tTab@Example.COM"]
    phones = ["+971 50-123-4567", "00971501234567", "12345", None, "(+44) 20 7946 0018", "+0123456789", "971501234567"]
    df = spark.createDataFrame(list(zip(emails, phones, strict=True)), ["email", "phone"])
    key = spark.sparkContext.broadcast(KEY)
    query = df.select(pseudonym_udf("email", key)(F.col("email")).alias("e"),
                      pseudonym_udf("phone", key)(F.col("phone")).alias("p"))
    rows = query.collect()
    # the key travels as a broadcast variable, never inside the plan that UIs and event logs show
    plan = query._jdf.queryExecution().toString()
    assert KEY.decode() not in plan and KEY.hex() not in plan
    assert [r.e for r in rows] == [python(p.email, e) for e in emails]
    assert [r.p for r in rows] == [python(p.phone, x) for x in phones]
    assert sum(r.e is not None for r in rows) == 3 and sum(r.p is not None for r in rows) == 3


def test_ip_canonical_or_null(spark):
    df = spark.createDataFrame([("10.0.0.1",), (" 2001:0db8::0001 ",), ("300.1.1.1",), ("nope",), (None,)], ["ip"])
    assert [r[0] for r in df.select(normalise_ip(F.col("ip"))).collect()] == ["10.0.0.1", "2001:db8::1", None, None, None]


def _events(spark, rows):
    return spark.createDataFrame(rows, "event_id string, customer_id string, event_type string, occurred_at timestamp, "
                                       "device_id string, ip string, email string, phone string, card_fingerprint string")


def test_identity_edges_exact(spark):
    ev = _events(spark, [
        ("e0", "c:9", "login", _ts("2026-01-01T00:00:00Z"), "d9", None, None, None, None),  # ":" inside an id
        ("e1", "c1", "signup", _ts("2026-01-01T00:00:00Z"), "d1", "10.0.0.1", None, None, None),
        ("e2", "c1", "login", _ts("2026-01-03T00:00:00Z"), "d1", "10.0.0.2", None, None, None),
        ("e3", "c1", "booking", _ts("2026-01-02T00:00:00Z"), "d1", None, None, None, "k1"),
        ("e4", "c2", "login", _ts("2026-01-05T00:00:00Z"), "d1", None, None, None, None),
    ])
    got = {(r["from_id"], r["to_id"]): r.asDict() for r in identity_edges(ev).collect()}
    assert set(got) == {("customer:c:9", "device:d9"), ("customer:c1", "device:d1"), ("customer:c1", "ip:10.0.0.1"), ("customer:c1", "ip:10.0.0.2"),
                        ("customer:c1", "card:k1"), ("customer:c2", "device:d1")}
    d = got[("customer:c1", "device:d1")]
    assert d["id"] == schema.edge_id("customer:c1", "has_device", "device:d1")
    assert d["label"] == "has_device"
    assert (d["first_seen"], d["last_seen"]) == (datetime(2026, 1, 1), datetime(2026, 1, 3))
    assert (d["event_count"], d["n_signup"], d["n_login"], d["n_booking"], d["n_add_payment_method"]) == (3, 1, 1, 1, 0)
    assert got[("customer:c1", "card:k1")]["event_count"] == 1
    empty = spark.createDataFrame([], "customer_id string, created_at timestamp, country string, lifetime_value double")
    blocks = spark.createDataFrame([("c2", _ts("2026-01-04T00:00:00Z"), "fraud", "rule", "r", None)],
                                   "customer_id string, blocked_at timestamp, reason string, source string, "
                                   "rule_name string, unblocked_at timestamp")
    care = spark.createDataFrame([("c1", _ts("2026-01-04T00:00:00Z"), "block_review")],
                                 "customer_id string, contacted_at timestamp, topic string")
    cust = customer_vertices(empty, identity_edges(ev), blocks, care)
    assert {r.id for r in cust.collect()} == {"customer:c:9", "customer:c1", "customer:c2"}
    verts = {r["id"]: r.asDict() for r in identifier_vertices(identity_edges(ev), cust).collect()}
    assert {(v, r["label"]) for v, r in verts.items()} == {
        ("device:d9", "device"), ("device:d1", "device"), ("ip:10.0.0.1", "ip"), ("ip:10.0.0.2", "ip"), ("card:k1", "card")}
    d1 = verts["device:d1"]  # c1 (contested) three times, c2 (blocked) once
    assert (d1["n_customers"], d1["n_blocked"], d1["n_contested"]) == (2, 1, 1)
    assert (d1["first_seen"], d1["last_seen"]) == (datetime(2026, 1, 1), datetime(2026, 1, 5))
    assert (verts["device:d9"]["n_customers"], verts["device:d9"]["n_blocked"], verts["device:d9"]["n_contested"]) == (1, 0, 0)


def test_history_at_and_customer_summary(spark):
    as_of = datetime(2026, 3, 1, tzinfo=UTC)
    customers = spark.createDataFrame(
        [("c1", _ts("2025-01-01T00:00:00Z"), "AE", 10.0), ("c2", _ts("2025-02-01T00:00:00Z"), None, 0.0)],
        ["customer_id", "created_at", "country", "lifetime_value"])
    blocks = spark.createDataFrame([
        ("c1", _ts("2026-01-01T00:00:00Z"), "abuse", "rule", "velocity", _ts("2026-01-05T00:00:00Z")),
        ("c1", _ts("2026-02-01T00:00:00Z"), "fraud", "manual", None, _ts("2026-04-01T00:00:00Z")),  # lifted after as-of
        ("c2", _ts("2026-05-01T00:00:00Z"), "fraud", "rule", "x", None),  # after as-of: unknown then
        ("c3", _ts("2026-02-10T00:00:00Z"), "fraud", "rule", "y", None),  # only in history
        ("c4", _ts("2026-01-10T00:00:00Z"), "fraud", "rule", "z", None),
        ("c4", _ts("2026-02-10T00:00:00Z"), "abuse", "rule", "w", _ts("2026-02-11T00:00:00Z")),  # lifts all before it
    ], "customer_id string, blocked_at timestamp, reason string, source string, rule_name string, unblocked_at timestamp")
    care = spark.createDataFrame([
        ("c1", _ts("2026-02-02T00:00:00Z"), "block_review"), ("c1", _ts("2026-06-01T00:00:00Z"), "block_review"),
        ("c2", _ts("2026-01-01T00:00:00Z"), "payment")], ["customer_id", "contacted_at", "topic"])
    b, c = history_at(blocks, care, as_of)
    assert b.count() == 5 and c.count() == 2
    lifted = {r.customer_id: r.unblocked_at for r in b.filter(F.col("reason") == "fraud").collect()}
    assert lifted["c1"] is None  # the lifting happened after as-of
    empty_edges = spark.createDataFrame([], "from_id string")
    rows = {r.id: r.asDict() for r in customer_vertices(customers, empty_edges, b, c).collect()}
    c1 = rows["customer:c1"]
    assert (c1["n_blocks"], c1["last_block_reason"], c1["last_block_source"], c1["blocked"]) == (2, "fraud", "manual", True)
    assert c1["last_unblock_at"] == datetime(2026, 1, 5) and c1["n_block_reviews"] == 1
    c2 = rows["customer:c2"]
    assert (c2["n_blocks"], c2["blocked"], c2["n_block_reviews"], c2["country"]) == (0, False, 0, None)
    assert rows["customer:c3"]["blocked"] is True and rows["customer:c3"]["created_at"] is None
    c4 = rows["customer:c4"]
    assert (c4["blocked"], c4["last_block_reason"], c4["last_block_rule"]) == (False, "abuse", "w")


def test_validate_events_reasons_dedupe_and_redaction(spark):
    raw = spark.createDataFrame([
        ("e1", "c1", "login", "2026-01-01T00:00:00Z", "d1", "10.0.0.1", "a@b.c", "+971501234567", None),
        ("e1", "c1", "login", "2026-01-02T00:00:00Z", "d1", None, "dup@b.c", None, None),   # duplicate id
        (None, "c1", "login", "2026-01-01T00:00:00Z", None, None, None, None, None),
        ("e3", " ", "login", "2026-01-01T00:00:00Z", None, None, None, None, None),
        ("e4", "c1", "teleport", "2026-01-01T00:00:00Z", None, None, None, None, None),
        ("e5", "c1", "login", "yesterday", None, None, None, None, None),
        ("e6", "c1", "login", "2026-01-01T00:00:00Z", None, "1.2.3", None, None, None),
        ("e7", "c1", "login", "2026-01-01T00:00:00Z", None, None, "secret-not-an-email", None, None),
        ("e8", "c1", "login", "2026-01-01T00:00:00Z", None, None, None, "12", None),
    ], ", ".join(f"{c} string" for c in contract.TABLES["identity_events"]))
    good, bad = contract.validate_events(raw, KEY)
    assert [r.event_id for r in good.collect()] == ["e1"]
    assert good.first().occurred_at == datetime(2026, 1, 1)
    reasons = sorted(r.reason for r in bad.collect())
    assert reasons == sorted(["event_id: duplicate", "event_id: missing", "customer_id: missing",
                              "event_type: unknown event type", "occurred_at: missing or not an ISO-8601 timestamp",
                              "ip: not a valid IPv4 or IPv6 address", "email: not an email address",
                              "phone: not an E.164 number"])
    dumped = " ".join(str(r.asDict(recursive=True)) for r in bad.collect())
    assert "secret-not-an-email" not in dumped and "dup@b.c" not in dumped and "<redacted>" in dumped
    assert good.count() + bad.count() == raw.count()


def test_validate_other_tables(spark):
    customers = spark.createDataFrame([
        ("c1", "2025-01-01T00:00:00Z", "AE", "1.5"), ("c1", "2025-01-02T00:00:00Z", "AE", "2"),
        ("c2", "x", "AE", "1"), ("c3", "2025-01-01T00:00:00Z", "UAE", "1"), ("c4", "2025-01-01T00:00:00Z", None, "-3"),
        ("c5", "2025-01-01T00:00:00Z", None, "lots"), ("c6", "2025-01-01T00:00:00Z", None, None),
    ], ", ".join(f"{c} string" for c in contract.TABLES["customers"]))
    good, bad = contract.validate_customers(customers)
    assert sorted(r.customer_id for r in good.collect()) == ["c1", "c6"]
    assert good.filter(F.col("customer_id") == "c6").first().lifetime_value == 0.0
    assert sorted(r.reason for r in bad.collect()) == sorted([
        "customer_id: duplicate", "created_at: missing or not an ISO-8601 timestamp",
        "country: not an ISO 3166-1 alpha-2 code", "lifetime_value: negative", "lifetime_value: not a number"])
    blocks = spark.createDataFrame([
        ("c1", "2026-01-01T00:00:00Z", "fraud", "rule", "r", None), ("c1", "2026-01-01T00:00:00Z", "meh", "rule", None, None),
        ("c1", "2026-01-01T00:00:00Z", "fraud", "bot", None, None),
        ("c1", "2026-01-05T00:00:00Z", "fraud", "manual", None, "2026-01-01T00:00:00Z"),
    ], ", ".join(f"{c} string" for c in contract.TABLES["blocks"]))
    good, bad = contract.validate_blocks(blocks)
    assert good.count() == 1
    assert sorted(r.reason for r in bad.collect()) == sorted([
        "reason: not one of fraud, abuse, other", "source: not one of manual, rule", "unblocked_at: before blocked_at"])
    care = spark.createDataFrame([("c1", "2026-01-01T00:00:00Z", "block_review"), ("c1", "2026-01-01T00:00:00Z", "chat")],
                                 contract.TABLES["care_contacts"])
    good, bad = contract.validate_care(care)
    assert good.count() == 1 and bad.first().reason == "topic: not one of block_review, payment, other"
