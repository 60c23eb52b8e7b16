"""The labeling job's configuration (``conf/labeling.yaml``): maturity windows and the correction rules.

Kept apart from the platform's settings tree because it is a *labeling policy*: the people who own label
quality change it, it is versioned with the labels it produced, and a report names the file it came from.
Unknown keys are errors naming the key, for the same reason as in ``identigraph.config``: a mistyped
``max_customer`` that silently fell back to a default would unleash a rule on carrier NAT hubs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from identigraph.errors import ConfigError
from identigraph.graph import schema
from identigraph.synth.params import describe_validation

DEFAULT_LABELING_CONFIG = Path("conf/labeling.yaml")

Status = Literal[
    "matured_fraud", "corrected_fraud", "immature_block", "unconfirmed_block", "contested", "lifted",
    "non_fraud_block", "matured_legit", "too_new",
    "reviewed_fraud", "reviewed_legit",  # a reviewer's verdict in the console: overrides all of the above
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
FRAUD_STATUSES = ("matured_fraud", "corrected_fraud", "reviewed_fraud")
LEGIT_STATUSES = ("matured_legit", "reviewed_legit")
# A correction is a guess from the graph; a customer the platform itself cleared (contested or lifted) or
# already labelled fraud is never a target, whatever a rule says.
NEVER_PROMOTED = ("matured_fraud", "corrected_fraud", "contested", "lifted")
IdentifierType = Literal["device", "ip", "email", "phone", "card"]
assert set(IdentifierType.__args__) == set(schema.IDENTIFIERS)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnconfirmedBlocks(_Strict):
    """Automated fraud blocks on accounts that were already established when blocked.

    Rule engines fire on young accounts where fraud lives; when one fires on an account with a long clean
    history, that is where their false positives concentrate, and a customer who never contests still is
    not proof. Such a block stays unknown (``unconfirmed_block``) unless a correction rule corroborates it.
    """

    sources: list[str] = Field(default_factory=lambda: ["rule"], min_length=1)
    min_account_age_days: float = Field(30.0, gt=0, description="account age at the block, in days")


class MaturityConfig(_Strict):
    maturity_days: float = Field(30.0, ge=0, description="a fraud block is a label only when at least this old")
    appeal_days: float = Field(14.0, ge=0, description="a block_review contact this soon after a block contests it")
    legit_min_age_days: float = Field(60.0, ge=0, description="never-blocked accounts younger than this are unknown")
    fraud_reasons: list[str] = Field(default_factory=lambda: ["fraud"], min_length=1)
    review_topics: list[str] = Field(default_factory=lambda: ["block_review"], min_length=1)
    unconfirmed_blocks: UnconfirmedBlocks | None = None

    @model_validator(mode="after")
    def _windows(self) -> MaturityConfig:
        if self.appeal_days > self.maturity_days:
            # otherwise a block could become a fraud label and be contested afterwards, inside its appeal window
            raise ValueError(f"maturity.appeal_days ({self.appeal_days:g}) must not exceed "
                             f"maturity.maturity_days ({self.maturity_days:g})")
        return self


class Burst(_Strict):
    min_accounts: int = Field(ge=2, description="accounts on the identifier, this one included")
    within_days: float = Field(gt=0, description="of this account's creation")


class Rule(_Strict):
    """One heuristic: conditions on each identifier of the customer; it fires when enough qualify."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    confidence: float = Field(gt=0, le=1, description="expected precision of its promotions (stated, then measured)")
    comment: str = Field(min_length=1)
    via: list[IdentifierType] = Field(min_length=1)
    max_customers: int = Field(ge=2, le=100_000,
                               description="hub guard: the identifier has at most this many customers")
    min_fraud: int | None = Field(None, ge=1, description="other matured-fraud customers on the identifier")
    fraud_created_within_hours: float | None = Field(None, gt=0)
    burst: Burst | None = None
    min_identifiers: int = Field(1, ge=1, description="distinct qualifying identifiers")
    min_account_age_days: float | None = Field(None, ge=0)
    max_account_age_days: float | None = Field(None, ge=0)
    promote_from: list[Status] | None = Field(None, min_length=1, description="overrides the top-level list")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.min_fraud is None and self.burst is None:
            raise ValueError(f"rule {self.name}: needs min_fraud or burst (a rule without either promotes everyone)")
        if self.fraud_created_within_hours is not None and self.min_fraud is None:
            raise ValueError(f"rule {self.name}: fraud_created_within_hours needs min_fraud")
        if len(set(self.via)) != len(self.via):
            raise ValueError(f"rule {self.name}: via lists an identifier type twice")
        if (self.min_account_age_days is not None and self.max_account_age_days is not None
                and self.min_account_age_days > self.max_account_age_days):
            raise ValueError(f"rule {self.name}: min_account_age_days exceeds max_account_age_days")
        _check_promote_from(self.promote_from or [], f"rules.{self.name}.promote_from")
        return self


def _check_promote_from(statuses: list[str], where: str) -> None:
    bad = sorted(set(statuses) & set(NEVER_PROMOTED))
    if bad:
        raise ValueError(f"{where}: {', '.join(bad)} can never be promoted")


class LabelingConfig(_Strict):
    maturity: MaturityConfig = MaturityConfig()
    promote_from: list[Status] = Field(default_factory=lambda: ["matured_legit", "too_new", "immature_block"],
                                       min_length=1)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> LabelingConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules: duplicate rule names: {', '.join(dupes)}")
        _check_promote_from(self.promote_from, "promote_from")
        return self

    def rule_promote_from(self, rule: Rule) -> list[str]:
        return list(rule.promote_from or self.promote_from)


def parse_labeling_config(data: Any, source: str = "labeling config") -> LabelingConfig:
    try:
        return LabelingConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc, source)) from None


def load_labeling_config(path: str | Path | None = None) -> LabelingConfig:
    """Read and check the YAML; raises ConfigError naming every bad field."""
    cfg_path = Path(path) if path else DEFAULT_LABELING_CONFIG
    if not cfg_path.exists():
        raise ConfigError(f"labeling configuration file not found: {cfg_path}")
    try:
        data = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: top level must be a mapping, got {type(data).__name__}")
    return parse_labeling_config(data, f"labeling config {cfg_path}")
