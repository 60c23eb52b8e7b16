"""Correction rules on a hand-made graph: islands of identifiers, each exercising one condition, and
one Spark pass that says exactly which rules fired on whom."""

from datetime import datetime, timedelta, timezone

import pytest

from identigraph.labeling.config import parse_labeling_config
from identigraph.labeling.rules import corrections

UTC = timezone.utc
ACCOUNT_SCHEMA = "customer_id string, created timestamp, status string, age_us long, touched boolean"
EDGE_SCHEMA = "customer_id string, id_type string, identifier string"
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)
T = AS_OF - 300 * D  # when most of these accounts were created

CFG = parse_labeling_config({
    "promote_from": ["matured_legit", "too_new", "immature_block"],
    "rules": [
        {"name": "fraud_device", "confidence": 0.9, "comment": "hub guard at 4", "via": ["device"],
         "max_customers": 4, "min_fraud": 1},
        {"name": "card_two_fraud", "confidence": 0.9, "comment": "two others", "via": ["card"],
         "max_customers": 50, "min_fraud": 2},
        {"name": "phone_fraud_within_day", "confidence": 0.9, "comment": "time window", "via": ["phone"],
         "max_customers": 50, "min_fraud": 1, "fraud_created_within_hours": 24},
        {"name": "email_burst", "confidence": 0.9, "comment": "burst", "via": ["email"], "max_customers": 50,
         "burst": {"min_accounts": 3, "within_days": 10}},
        {"name": "two_fraud_ips", "confidence": 0.9, "comment": "two identifiers", "via": ["ip"],
         "max_customers": 50, "min_fraud": 1, "min_identifiers": 2},
        {"name": "old_card", "confidence": 0.9, "comment": "age bound", "via": ["card"], "max_customers": 50,
         "min_fraud": 1, "min_account_age_days": 100},
        {"name": "abuse_device", "confidence": 0.9, "comment": "own promote_from", "via": ["device"],
         "max_customers": 50, "min_fraud": 1, "promote_from": ["non_fraud_block"]},
    ],
})

# customer -> (status, created, touched)
ACCOUNTS = {
    # device:d1 has 6 customers: over fraud_device's hub guard of 4
    "F1": ("matured_fraud", T, False), "A1": ("matured_legit", T, False), "A2": ("too_new", T, False),
    "A3": ("matured_legit", T, False), "A4": ("matured_legit", T, False), "A5": ("matured_legit", T, False),
    # device:d2, 4 customers: the legit and the immature are promoted, the contested never
    "F2": ("matured_fraud", T, False), "B1": ("matured_legit", T, False), "B2": ("immature_block", T, False),
    "B3": ("contested", T, False),
    # device:d3: ever contested/lifted, a non-fraud block and an unconfirmed block are not fraud_device's to touch
    "F3": ("matured_fraud", T, False), "C1": ("matured_legit", T, True), "C2": ("non_fraud_block", T, False),
    "C3": ("unconfirmed_block", T, False),
    # device:d4 joins B1 (promoted above) and G1: corrections never chain
    "G1": ("matured_legit", T, False),
    # card:k1 has two fraudsters, card:k2 one; H3 is too young for old_card
    "F4": ("matured_fraud", T, False), "F5": ("matured_fraud", T, False), "H1": ("matured_legit", T, False),
    "F6": ("matured_fraud", T, False), "H2": ("matured_legit", T, False),
    "H3": ("matured_legit", AS_OF - 50 * D, False),
    # phone:p1: created within 24 h of the fraudster or not
    "F9": ("matured_fraud", T, False), "J1": ("matured_legit", T + 23 * H, False),
    "J2": ("matured_legit", T + 25 * H, False), "J3": ("matured_legit", T - 24 * H, False),
    # email:e1: accounts created at T, T+5d, T+10d, T+20d; no fraud at all
    "K1": ("matured_legit", T, False), "K2": ("matured_legit", T + 5 * D, False),
    "K3": ("matured_legit", T + 10 * D, False), "K4": ("matured_legit", T + 20 * D, False),
    # ip:i1 and ip:i2 each with a fraudster: L1 is on both, L2 on one
    "F10": ("matured_fraud", T, False), "F11": ("matured_fraud", T, False),
    "L1": ("matured_legit", T, False), "L2": ("matured_legit", T, False),
}
EDGES = {
    "device:d1": ["F1", "A1", "A2", "A3", "A4", "A5"],
    "device:d2": ["F2", "B1", "B2", "B3"],
    "device:d3": ["F3", "C1", "C2", "C3"],
    "device:d4": ["B1", "G1"],
    "card:k1": ["F4", "F5", "H1"],
    "card:k2": ["F6", "H2", "H3"],
    "phone:p1": ["F9", "J1", "J2", "J3"],
    "email:e1": ["K1", "K2", "K3", "K4"],
    "ip:i1": ["F10", "L1", "L2"],
    "ip:i2": ["F11", "L1"],
}
EXPECTED = {
    "B1": ["fraud_device"], "B2": ["fraud_device"],
    "C2": ["abuse_device"],
    "H1": ["card_two_fraud", "old_card"], "H2": ["old_card"],
    "J1": ["phone_fraud_within_day"], "J3": ["phone_fraud_within_day"],
    "K1": ["email_burst"], "K2": ["email_burst"], "K3": ["email_burst"],
    "L1": ["two_fraud_ips"],
}


@pytest.fixture(scope="module")
def fired(spark):
    accounts = spark.createDataFrame(
        [(cid, created, status, int((AS_OF - created).total_seconds() * 1e6), touched)
         for cid, (status, created, touched) in ACCOUNTS.items()],
        ACCOUNT_SCHEMA)
    edges = spark.createDataFrame([(cid, ident.split(":")[0], ident) for ident, cids in EDGES.items() for cid in cids],
                                  EDGE_SCHEMA)
    return {r.customer_id: r.rules for r in corrections(edges, accounts, CFG).collect()}


def test_exactly_the_expected_rules_fire(fired):
    assert {cid: [h.rule for h in hits] for cid, hits in fired.items()} == EXPECTED


def test_evidence_names_identifiers_and_counts(fired):
    (hit,) = fired["B1"]
    assert (hit.rule, hit.confidence, hit.identifiers_matched) == ("fraud_device", 0.9, 1)
    assert [(i.id, i.customers, i.fraud, i.burst) for i in hit.identifiers] == [("device:d2", 4, 1, None)]
    card_two, _old_card = fired["H1"]
    assert [(i.id, i.fraud) for i in card_two.identifiers] == [("card:k1", 2)]
    assert [(i.id, i.customers, i.burst) for i in fired["K3"][0].identifiers] == [("email:e1", 4, 4)]
    assert fired["L1"][0].identifiers_matched == 2
    assert [i.id for i in fired["L1"][0].identifiers] == ["ip:i1", "ip:i2"]


def test_no_rules_no_corrections(spark):
    accounts = spark.createDataFrame([("x", T, "matured_legit", 1, False)], ACCOUNT_SCHEMA)
    edges = spark.createDataFrame([("x", "device", "device:d")], EDGE_SCHEMA)
    assert corrections(edges, accounts, parse_labeling_config({})).count() == 0
