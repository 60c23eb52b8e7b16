"""The labeling policy file: the shipped one loads, and every mistake is an error naming its field."""

from pathlib import Path

import pytest

from identigraph.config_loader import packaged_default
from identigraph.errors import ConfigError
from identigraph.labeling.config import load_labeling_config, parse_labeling_config

REPO = Path(__file__).resolve().parents[2]
RULE = {"name": "r", "confidence": 0.9, "comment": "c", "via": ["device"], "max_customers": 10, "min_fraud": 1}


def test_shipped_config_loads_and_explains_every_rule():
    cfg = load_labeling_config(packaged_default("labeling.yaml"))
    assert cfg.maturity.appeal_days <= cfg.maturity.maturity_days
    assert cfg.rules and all(len(r.comment) > 40 for r in cfg.rules)
    assert "contested" not in cfg.promote_from and "lifted" not in cfg.promote_from


@pytest.mark.parametrize("data, message", [
    ({"maturity": {"maturity_days": 10, "appeal_days": 14}},
     "appeal_days (14) must not exceed maturity.maturity_days (10)"),
    ({"maturity": {"maturity_day": 10}}, "maturity.maturity_day: unknown key"),
    ({"maturity": {"legit_min_age_days": -1}}, "maturity.legit_min_age_days"),
    ({"rules": [{**RULE, "min_fraud": None}]}, "rule r: needs min_fraud or burst"),
    ({"rules": [{**RULE, "via": ["imei"]}]}, "rules.0.via.0"),
    ({"rules": [{**RULE, "max_customer": 5}]}, "rules.0.max_customer: unknown key"),
    ({"rules": [{k: v for k, v in RULE.items() if k != "max_customers"}]}, "rules.0.max_customers: Field required"),
    ({"rules": [{**RULE, "fraud_created_within_hours": 5, "min_fraud": None, "burst": {"min_accounts": 3,
                                                                                       "within_days": 1}}]},
     "fraud_created_within_hours needs min_fraud"),
    ({"rules": [{**RULE, "burst": {"min_accounts": 1, "within_days": 1}}]}, "rules.0.burst.min_accounts"),
    ({"rules": [RULE, RULE]}, "duplicate rule names: r"),
    ({"rules": [{**RULE, "promote_from": ["lifted"]}]}, "rules.r.promote_from: lifted can never be promoted"),
    ({"promote_from": ["matured_legit", "contested"]}, "promote_from: contested can never be promoted"),
    ({"rules": [{**RULE, "min_account_age_days": 10, "max_account_age_days": 5}]}, "min_account_age_days exceeds"),
    ({"rules": [{**RULE, "name": "Bad Name"}]}, "rules.0.name"),
])
def test_bad_config_names_the_field(data, message):
    with pytest.raises(ConfigError) as exc:
        parse_labeling_config(data)
    assert message in str(exc.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_labeling_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_labeling_config(bad)
    bad.write_text("maturity:\n  maturity_days: 5\n  appeal_days: 7\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_labeling_config(bad)
