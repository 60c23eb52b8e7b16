"""The labeling job's configuration (``labeling.yaml``): maturity windows and the correction rules.

Kept apart from the platform's settings tree because it is a *labeling policy*: the people who own label
quality change it, it is versioned with the labels it produced, and a report names the file it came from.
Unknown keys are errors naming the key, for the same reason as in ``identigraph.config``: a mistyped
``max_customer`` that silently fell back to a default would unleash a rule on carrier NAT hubs. Read like
every other configuration (``identigraph.config_loader``): ``--labeling-config``,
``$IDENTIGRAPH_LABELING_CONFIG`` or the packaged default, then ``IDENTIGRAPH_LABELING__SECTION__KEY``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from identigraph.config_loader import LABELING, FrozenModel, load_config, packaged_default, validate
from identigraph.graph import schema

DEFAULT_LABELING_CONFIG = packaged_default(LABELING.default_file)

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


class UnconfirmedBlocks(FrozenModel):
    """Automated fraud blocks on accounts that were already established when blocked.

    Rule engines fire on young accounts where fraud lives; when one fires on an account with a long clean
    history, that is where their false positives concentrate, and a customer who never contests still is
    not proof. Such a block stays unknown (``unconfirmed_block``) unless a correction rule corroborates it.
    """

    sources: list[str] = Field(default_factory=lambda: ["rule"], min_length=1)
    min_account_age_days: float = Field(30.0, gt=0, description="account age at the block, in days")


class MaturityConfig(FrozenModel):
    """When a block has lasted long enough, uncontested, to be believed as a fraud label."""

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


class Burst(FrozenModel):
    """Many accounts created on one identifier in a short time: how rings sign up."""

    min_accounts: int = Field(ge=2, description="accounts on the identifier, this one included")
    within_days: float = Field(gt=0, description="of this account's creation")


class Rule(FrozenModel):
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


def _check_promote_from(statuses: Sequence[str], where: str) -> None:
    bad = sorted(set(statuses) & set(NEVER_PROMOTED))
    if bad:
        raise ValueError(f"{where}: {', '.join(bad)} can never be promoted")


_PROMOTED_BY_DEFAULT: tuple[Status, ...] = ("matured_legit", "too_new", "immature_block")


class LabelingConfig(FrozenModel):
    """The whole labeling policy; a report names the file it came from, so labels can be traced to it."""

    maturity: MaturityConfig = MaturityConfig()
    promote_from: list[Status] = Field(default_factory=lambda: list(_PROMOTED_BY_DEFAULT), min_length=1)
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


def parse_labeling_config(data: Any, source: str = "given data") -> LabelingConfig:
    """Check a policy that is already data (tests, a report's copy); ConfigError names every bad key."""
    return validate(LabelingConfig, data or {}, LABELING.title, source)


def load_labeling_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> LabelingConfig:
    """Read and check the YAML; raises ConfigError naming the file and every bad key."""
    return load_config(LABELING, LabelingConfig, path, environ=environ)
