"""The serving pieces that need no server: policy, configuration, keys and rate limits, evidence text."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from identigraph.config_loader import packaged_default
from identigraph.errors import ConfigError
from identigraph.model.request_path import RequestGraph
from identigraph.serving import explain
from identigraph.serving.auth import Authenticator, Forbidden, RateLimited, TokenBucket, Unauthorized, key_digest
from identigraph.serving.config import PolicyConfig, RateLimit, ServingConfig, load_serving_config
from identigraph.serving.neighbourhood import Fetched
from identigraph.serving.policy import Facts, decide

REPO = Path(__file__).resolve().parents[2]
RULES = [{"name": "device_shared_with_blocked", "identifier": "device", "min_blocked": 2},
         {"name": "card_ring", "identifier": "card", "min_blocked": 3, "at_least": "block"}]
POLICY = PolicyConfig(lifetime_value_boundary=200, hard_rules=RULES)


@pytest.mark.parametrize("score, ltv, blocked, decision, rules", [
    (0.10, 50.0, {}, "allow", []),                                  # below threshold
    (0.90, 50.0, {}, "block", []),                                  # fraud, low value: automatic block
    (0.90, 200.0, {}, "review", []),                                # the boundary itself is high value
    (0.90, 5_000.0, {}, "review", []),                              # fraud, high value: a person decides
    (0.90, None, {}, "review", []),                                 # value unknown: never a block
    (0.50, 50.0, {}, "block", []),                                  # at the threshold counts as fraud
    (0.10, 50.0, {"device": 2}, "review", ["device_shared_with_blocked"]),   # rule lifts an allow
    (0.10, 50.0, {"device": 1}, "allow", []),                       # under the rule's count
    (0.90, 50.0, {"device": 5}, "block", ["device_shared_with_blocked"]),    # rules never lower a decision
    (0.10, 50.0, {"card": 3}, "block", ["card_ring"]),              # a block rule on a low-value account
    (0.10, 900.0, {"card": 3}, "review", ["card_ring"]),            # ... yields to the value boundary
])
def test_policy_cases(score, ltv, blocked, decision, rules):
    verdict = decide(Facts(score, ltv, blocked), POLICY, threshold=0.5)
    assert (verdict.decision, verdict.rules, verdict.degraded) == (decision, rules, False)
    assert verdict.reasons


@pytest.mark.parametrize("facts", [
    Facts(0.99, 1.0, {"card": 9}, missing=("graph did not answer within 1s",)),
    Facts(None, 1.0, {}, missing=("no model loaded",)),
    Facts(None, 1.0, {}),
])
def test_missing_or_degraded_data_is_a_degraded_review_never_a_block(facts):
    verdict = decide(facts, POLICY, threshold=0.5)
    assert (verdict.decision, verdict.degraded) == ("review", True)
    assert any("never blocks" in r for r in verdict.reasons)


def _config(**over) -> dict:
    return {"api_keys": [{"id": "team-a", "sha256": key_digest("a-key"), "scopes": ["score"],
                          "rate_limit": {"per_second": 1, "burst": 2}},
                         {"id": "team-b", "sha256": key_digest("b-key"), "scopes": ["identity:read"]}], **over}


def test_shipped_config_loads_and_errors_name_the_field(tmp_path):
    shipped = load_serving_config(packaged_default("serving.yaml"))
    assert shipped.neighbourhood.hops <= 2 and shipped.max_batch >= 1 and shipped.api_keys
    bad = tmp_path / "serving.yaml"
    bad.write_text("api_keys: []\npolicy: {treshold: 0.5, lifetime_value_boundary: -1}\nneighbourhood: {hops: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_serving_config(bad)
    text = str(err.value)
    for field in ("api_keys", "policy.treshold: unknown key", "policy.lifetime_value_boundary", "neighbourhood.hops"):
        assert field in text
    with pytest.raises(ConfigError, match="sha256"):
        load_serving_config(bad, {"api_keys": [{"id": "x", "sha256": "plaintext-key", "scopes": ["score"]}],
                                  "policy": {}, "neighbourhood": {}})
    with pytest.raises(ValueError, match="own id"):
        ServingConfig.model_validate(_config(api_keys=_config()["api_keys"] * 2))
    with pytest.raises(ValueError, match="unique"):
        PolicyConfig(hard_rules=[RULES[0], RULES[0]])


def test_keys_scopes_and_token_bucket():
    now = [0.0]
    auth = Authenticator(ServingConfig.model_validate(_config()), clock=lambda: now[0])
    with pytest.raises(Unauthorized):
        auth.check(None, "score")
    with pytest.raises(Unauthorized):
        auth.check("not-a-key", "score")
    with pytest.raises(Forbidden):
        auth.check("b-key", "score")
    assert auth.check("a-key", "score").id == "team-a"
    assert auth.check(" a-key ", "score").id == "team-a"
    with pytest.raises(RateLimited) as limited:
        auth.check("a-key", "score")
    assert limited.value.retry_after_s == pytest.approx(1.0)
    now[0] = 0.5
    with pytest.raises(RateLimited):
        auth.check("a-key", "score")
    now[0] = 1.0
    assert auth.check("a-key", "score").id == "team-a"
    assert auth.check("b-key", "identity:read").id == "team-b"  # buckets are per key

    bucket = TokenBucket(RateLimit(per_second=10, burst=3), clock=lambda: now[0])
    assert [bucket.take() == 0 for _ in range(4)] == [True, True, True, False]
    now[0] += 100  # refills up to the burst, not beyond
    assert [bucket.take() == 0 for _ in range(4)] == [True, True, True, False]


def test_evidence_counts_blocked_contested_and_says_when():
    t = datetime(2026, 6, 1)
    vertices = {
        "customer:s": ("customer", {"blocked": True}),
        "customer:a": ("customer", {"blocked": True, "created_at": t, "last_block_reason": "fraud"}),
        "customer:b": ("customer", {"blocked": True, "created_at": datetime(2026, 6, 3), "n_block_reviews": 1,
                                    "last_block_reason": "abuse"}),
        "customer:c": ("customer", {"blocked": False, "created_at": t}),
        "card:k": ("card", {"n_customers": 4, "first_seen": datetime(2026, 5, 1), "n_blocked": 3}),
        "ip:1.2.3.4": ("ip", {"n_customers": 40_000, "first_seen": datetime(2020, 1, 1), "n_blocked": 7,
                              "n_contested": 2}),
        "ip:10.0.0.1": ("ip", {"n_customers": 900, "first_seen": datetime(2021, 1, 1), "n_blocked": 5}),
    }
    edges = [("customer:s", "has_card", "card:k", {"first_seen": t}),
             ("customer:a", "has_card", "card:k", {"first_seen": datetime(2026, 5, 1)}),
             ("customer:b", "has_card", "card:k", {"first_seen": t}),
             ("customer:c", "has_card", "card:k", {"first_seen": t}),
             ("customer:s", "used_ip", "ip:1.2.3.4", {"first_seen": t}),
             ("customer:s", "used_ip", "ip:10.0.0.1", {"first_seen": t})]
    fetched = Fetched(RequestGraph(as_of=t, seed="customer:s", vertices=vertices, edges=edges), known=True,
                      virtual={"ip:1.2.3.4"}, hubs={"ip:1.2.3.4", "ip:10.0.0.1"})
    items = explain.evidence(fetched)
    new_hub, old_hub, card = items  # most blocked first
    assert (card["identifier_id"], card["customers_total"], card["blocked"], card["contested"]) == ("card:k", 4, 2, 1)
    assert card["created_within_days"] == 2.0 and card["first_seen"].startswith("2026-05-01")
    assert card["block_reasons"] == ["abuse", "fraud"]
    assert card["text"] == ("shares card card:k with 3 other accounts, 2 blocked created within 2 days, "
                            "1 contested a block; first seen 2026-05-01")
    # hubs: their stored counts; the seed's own block is taken out where its link is already counted
    assert (new_hub["identifier_id"], new_hub["blocked"], new_hub["contested"]) == ("ip:1.2.3.4", 7, 2)
    assert new_hub["new_in_request"] and "39,999 other accounts (counts from its statistics)" in new_hub["text"]
    assert (old_hub["identifier_id"], old_hub["blocked"], old_hub["others_seen"]) == ("ip:10.0.0.1", 4, 0)
    assert explain.blocked_on_identifier(items) == {"card": 2, "ip": 7}


def test_policy_public_reasons_name_the_rule_not_the_count():
    verdict = decide(Facts(0.1, 50.0, {"device": 5}), POLICY, threshold=0.5)
    assert any("shared with 5 blocked" in r for r in verdict.reasons)
    assert verdict.public_reasons == ["score 0.100 < threshold 0.500",
                                      "rule device_shared_with_blocked: a device shared with at least 2 blocked accounts"]


def test_token_bucket_takes_a_call_s_whole_cost_or_nothing():
    now = [0.0]
    bucket = TokenBucket(RateLimit(per_second=1, burst=10), clock=lambda: now[0])
    assert bucket.take(8) == 0.0
    assert bucket.take(3) == pytest.approx(1.0)  # 2 left: nothing taken, 1 s until 3 are there
    now[0] += 1.0
    assert bucket.take(3) == 0.0 and bucket.tokens == pytest.approx(0.0)


def test_limits_are_divided_among_worker_processes():
    cfg = ServingConfig.model_validate({"api_keys": [
        {"id": "a", "sha256": key_digest("a"), "scopes": ["score"], "max_concurrent": 5,
         "rate_limit": {"per_second": 100, "burst": 9}}], "reads": {"max_in_flight": 4},
        "review": {"max_cases_per_window": 1000, "max_degraded_per_window": 0}})
    two = cfg.per_worker(2)
    key = two.api_keys[0]
    assert (key.rate_limit.per_second, key.rate_limit.burst, key.max_concurrent) == (50, 5, 3)
    assert (two.reads.max_in_flight, two.review.max_cases_per_window, two.review.max_degraded_per_window) == (2, 500, 0)
    assert cfg.per_worker(1) is cfg and two.max_in_flight == cfg.max_in_flight  # per process by design


def test_review_gate_one_case_per_customer_per_window_and_a_budget_for_degraded():
    from identigraph.serving.config import ReviewRouting
    from identigraph.serving.review import DEGRADED_HELD, DUPLICATE, OVER_BUDGET, QUEUED, ReviewGate

    now = [0.0]
    held = ReviewGate(ReviewRouting(window_s=60, max_cases_per_window=3), clock=lambda: now[0])
    assert [held.admit(c, False) for c in ("a", "a", "b", "c", "d")] == [QUEUED, DUPLICATE, QUEUED, QUEUED,
                                                                         OVER_BUDGET]
    assert held.admit("e", True) == DEGRADED_HELD
    now[0] = 61.0  # a new window
    assert held.admit("a", False) == QUEUED
    allowed = ReviewGate(ReviewRouting(degraded=True, max_degraded_per_window=2), clock=lambda: now[0])
    assert [allowed.admit(c, True) for c in "xyz"] == [QUEUED, QUEUED, OVER_BUDGET]
    assert allowed.admit("w", False) == QUEUED  # the degraded budget does not close the queue to the rest
