"""Label maturity on hand-made histories: every status, each window exactly at its boundary and one
second either side, and facts after as-of that must change nothing. One Spark pass serves every case."""

from datetime import datetime, timedelta, timezone

import pytest

from identigraph.labeling.config import MaturityConfig, UnconfirmedBlocks
from identigraph.labeling.maturity import statuses

UTC = timezone.utc
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
S = timedelta(seconds=1)
D = timedelta(days=1)
OLD = AS_OF - 400 * D  # an account old enough for anything
CFG = MaturityConfig(maturity_days=30, appeal_days=14, legit_min_age_days=60,
                     unconfirmed_blocks=UnconfirmedBlocks(sources=["rule"], min_account_age_days=30))

# case -> (created_at, [blocks (blocked_at, reason, source, unblocked_at)], [care (contacted_at, topic)], status)
CASES = {
    "legit_exactly_min_age": (AS_OF - 60 * D, [], [], "matured_legit"),
    "legit_second_older": (AS_OF - 60 * D - S, [], [], "matured_legit"),
    "legit_second_younger": (AS_OF - 60 * D + S, [], [], "too_new"),
    "care_contact_is_no_block": (OLD, [], [(AS_OF - D, "payment")], "matured_legit"),
    "block_exactly_mature": (OLD, [(AS_OF - 30 * D, "fraud", "manual", None)], [], "matured_fraud"),
    "block_second_older": (OLD, [(AS_OF - 30 * D - S, "fraud", "manual", None)], [], "matured_fraud"),
    "block_second_younger": (OLD, [(AS_OF - 30 * D + S, "fraud", "manual", None)], [], "immature_block"),
    "block_at_as_of": (OLD, [(AS_OF, "fraud", "manual", None)], [], "immature_block"),
    "block_after_as_of": (OLD, [(AS_OF + S, "fraud", "manual", None)], [], "matured_legit"),
    "review_at_block": (OLD, [(AS_OF - 100 * D, "fraud", "manual", None)], [(AS_OF - 100 * D, "block_review")],
                        "contested"),
    "review_at_appeal_end": (OLD, [(AS_OF - 100 * D, "fraud", "manual", None)],
                             [(AS_OF - 86 * D, "block_review")], "contested"),
    "review_second_late": (OLD, [(AS_OF - 100 * D, "fraud", "manual", None)],
                           [(AS_OF - 86 * D + S, "block_review")], "matured_fraud"),
    "review_second_early": (OLD, [(AS_OF - 100 * D, "fraud", "manual", None)],
                            [(AS_OF - 100 * D - S, "block_review")], "matured_fraud"),
    "other_topic_is_no_contest": (OLD, [(AS_OF - 100 * D, "fraud", "manual", None)], [(AS_OF - 99 * D, "payment")],
                                  "matured_fraud"),
    "review_after_as_of": (OLD, [(AS_OF - 5 * D, "fraud", "manual", None)], [(AS_OF + S, "block_review")],
                           "immature_block"),
    "contested_immature": (OLD, [(AS_OF - 5 * D, "fraud", "manual", None)], [(AS_OF - 4 * D, "block_review")],
                           "contested"),
    "lifted": (OLD, [(AS_OF - 100 * D, "fraud", "manual", AS_OF - 90 * D)], [], "lifted"),
    "lifted_at_as_of": (OLD, [(AS_OF - 100 * D, "fraud", "manual", AS_OF)], [], "lifted"),
    "lifted_after_as_of": (OLD, [(AS_OF - 100 * D, "fraud", "manual", AS_OF + S)], [], "matured_fraud"),
    "abuse_block": (OLD, [(AS_OF - 100 * D, "abuse", "rule", None)], [], "non_fraud_block"),
    "fraud_then_abuse": (OLD, [(AS_OF - 200 * D, "fraud", "manual", None), (AS_OF - 100 * D, "other", "manual", None)],
                         [], "non_fraud_block"),
    "abuse_then_fraud": (OLD, [(AS_OF - 200 * D, "abuse", "manual", AS_OF - 190 * D),
                               (AS_OF - 100 * D, "fraud", "manual", None)], [], "matured_fraud"),
    "contested_then_fraud": (OLD, [(AS_OF - 200 * D, "fraud", "rule", AS_OF - 190 * D),
                                   (AS_OF - 100 * D, "fraud", "manual", None)],
                             [(AS_OF - 199 * D, "block_review")], "matured_fraud"),
    "rule_block_established_exactly": (AS_OF - 130 * D, [(AS_OF - 100 * D, "fraud", "rule", None)], [],
                                       "unconfirmed_block"),
    "rule_block_young_account": (AS_OF - 130 * D + S, [(AS_OF - 100 * D, "fraud", "rule", None)], [],
                                 "matured_fraud"),
    "manual_block_established": (AS_OF - 300 * D, [(AS_OF - 100 * D, "fraud", "manual", None)], [], "matured_fraud"),
    "created_after_as_of_seen_before": (AS_OF + D, [], [], "too_new"),  # its identifier dates it (edges below)
}
LABELS = {"matured_fraud": 1, "matured_legit": 0}
TOUCHED = {"contested_then_fraud", "abuse_then_fraud", "review_at_block", "review_at_appeal_end", "lifted",
           "lifted_at_as_of", "contested_immature"}


@pytest.fixture(scope="module")
def result(spark):
    customers, blocks, care = [], [], []
    for cid, (created, bl, cc, _) in CASES.items():
        customers.append((cid, created))
        blocks += [(cid, at, reason, source, "r" if source == "rule" else None, unblocked)
                   for at, reason, source, unblocked in bl]
        care += [(cid, at, topic) for at, topic in cc]
    customers += [("created_after_as_of_unseen", AS_OF + D), ("no_facts_before_as_of", None)]
    edges = [("created_after_as_of_seen_before", AS_OF - 10 * D), ("created_after_as_of_seen_before", AS_OF - 5 * D),
             ("no_facts_before_as_of", AS_OF + S), ("legit_exactly_min_age", AS_OF - 500 * D)]
    c = spark.createDataFrame(customers, "customer_id string, created_at timestamp")
    e = spark.createDataFrame(edges, "customer_id string, first_seen timestamp")
    b = spark.createDataFrame(blocks, "customer_id string, blocked_at timestamp, reason string, source string, "
                                      "rule_name string, unblocked_at timestamp")
    k = spark.createDataFrame(care, "customer_id string, contacted_at timestamp, topic string")
    rows = statuses(c, e, b, k, AS_OF, CFG).collect()
    return {r.customer_id: r for r in rows}


@pytest.mark.parametrize("case", sorted(CASES))
def test_status(result, case):
    row = result[case]
    assert row.status == CASES[case][3]
    assert row.label == LABELS.get(row.status)
    assert row.touched == (case in TOUCHED)


def _utc(value):
    return value.replace(tzinfo=UTC)  # Spark hands back naive datetimes in the session's zone (UTC)


def test_who_exists_at_as_of(result):
    # the customer table's own creation time wins over an earlier identifier (age is the account's)
    assert _utc(result["legit_exactly_min_age"].created) == AS_OF - 60 * D
    # a creation time after as-of is unknown then: age falls back to the earliest identifier seen
    assert _utc(result["created_after_as_of_seen_before"].created) == AS_OF - 10 * D
    assert "created_after_as_of_unseen" not in result and "no_facts_before_as_of" not in result
    assert len(result) == len(CASES)


def test_evidence_names_the_deciding_block(result):
    row = result["review_at_appeal_end"]
    assert _utc(row.maturity.block.at) == AS_OF - 100 * D
    assert _utc(row.maturity.block.contested_at) == AS_OF - 86 * D
    assert row.maturity.ever_contested is True
    # an un-block after as-of is not known at as-of
    assert result["lifted_after_as_of"].maturity.block.unblocked_at is None


def test_without_the_guard_established_rule_blocks_are_labels(spark):
    cfg = CFG.model_copy(update={"unconfirmed_blocks": None})
    created, blocks = CASES["rule_block_established_exactly"][:2]
    at, reason, source, _ = blocks[0]
    c = spark.createDataFrame([("x", created)], "customer_id string, created_at timestamp")
    e = spark.createDataFrame([], "customer_id string, first_seen timestamp")
    b = spark.createDataFrame([("x", at, reason, source, "r", None)], "customer_id string, blocked_at timestamp, "
                              "reason string, source string, rule_name string, unblocked_at timestamp")
    k = spark.createDataFrame([], "customer_id string, contacted_at timestamp, topic string")
    assert statuses(c, e, b, k, AS_OF, cfg).first().status == "matured_fraud"
