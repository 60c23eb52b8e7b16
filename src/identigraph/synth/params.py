"""Knobs of the synthetic world. Every later stage is measured on it, so bad values fail loudly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from identigraph.config_loader import describe
from identigraph.errors import SchemaError

UTC = timezone.utc


class SynthParams(BaseModel):
    """Size, time span and scenario rates of one synthetic world (deterministic per ``seed``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(20_000, ge=10, le=5_000_000, description="accounts in the world, fraud included")
    seed: int = Field(7, ge=0, lt=2**63)
    start: datetime = Field(datetime(2024, 7, 1, tzinfo=UTC), description="first account creation")
    end: datetime = Field(datetime(2026, 6, 30, tzinfo=UTC), description="as-of: nothing happens at or after it")
    stream_days: float = Field(7.0, gt=0, description="events in [end - stream_days, end) go to the stream")
    events_per_customer: float = Field(20.0, ge=2, le=500, description="mean identity events per account")
    growth: float = Field(1.2, ge=0, le=10, description="recency bias of creation dates (0 = uniform)")

    # legitimate population
    household_share: float = Field(0.3, ge=0, le=0.95, description="legit accounts living in households of 2-5")
    office_share: float = Field(0.25, ge=0, le=1, description="legit accounts that use an office IP")
    mobile_share: float = Field(0.85, ge=0, le=1, description="legit accounts that use carrier NAT IPs")
    vpn_share: float = Field(0.03, ge=0, le=1, description="legit accounts that use shared VPN exits")
    ipv6_share: float = Field(0.05, ge=0, le=1, description="homes with an IPv6 address")
    carrier_nat_ips: int | None = Field(
        None, ge=5, le=100_000, description="carrier NAT pool size; None scales 50..200 with customers"
    )
    churn_share: float = Field(0.25, ge=0, le=1, description="legit accounts that stop being active")

    # fraud scenarios (shares of all customers)
    ring_share: float = Field(0.02, ge=0, le=0.3, description="accounts in first-party fraud rings")
    ring_size_min: int = Field(5, ge=3, le=200)
    ring_size_max: int = Field(40, ge=3, le=500)
    multi_account_share: float = Field(0.015, ge=0, le=0.3, description="accounts in promo-abuse clusters")
    ato_share: float = Field(0.004, ge=0, le=0.2, description="old legit accounts taken over")

    # harder fraud and noisier operations (all off by default: the classic world stays as it was;
    # ``SynthParams.profile("hard")`` turns them on together)
    soft_ring_share: float = Field(0.0, ge=0, le=0.3, description=(
        "accounts in rings sharing no hard identifier: own phone, card, email and number each; only a creation "
        "burst and a residential-proxy /24 (addresses also used by the homes behind them) tie them together"))
    soft_ring_detection_prob: float = Field(0.35, ge=0, le=1, description=(
        "chance a soft-ring member is blocked (one by one: the shared-kit rules never fire on them)"))
    drift_days: float = Field(0.0, ge=0, le=3650, description=(
        "soft rings appear only in the last drift_days before end (a pattern the training period lacks); "
        "0 = throughout"))
    stealth_ato_share: float = Field(0.0, ge=0, le=1, description=(
        "takeovers whose only trace is edge timing: the attacker keeps email and phone, links a new device and "
        "card years after the account was created and uses them from a fraud proxy"))
    household_fp_share: float = Field(0.0, ge=0, le=1, description=(
        "households a shared-device rule blocks all at once (wrong blocks on neighbours of honest people)"))
    fraud_lift_rate: float = Field(0.0, ge=0, le=1, description=(
        "blocked fraudsters who contest and get the block lifted (wrong unblocks), then carry on"))
    resold_device_share: float = Field(0.0, ge=0, le=1, description=(
        "churned legit accounts whose phone is resold to a new customer (a device shared years apart)"))

    # detection and operations
    detection_prob: float = Field(0.6, ge=0, le=1, description="chance a fraudster is blocked for fraud")
    detection_delay_days: float = Field(10.0, gt=0, le=365, description="median detection delay (heavy tail)")
    false_positive_rate: float = Field(0.008, ge=0, le=0.2, description="legit accounts with a rule fraud block")
    contest_rate: float = Field(0.8, ge=0, le=1, description="false positives that contest via care")
    unblock_rate: float = Field(0.6, ge=0, le=1, description="contested false positives that get unblocked")
    nonfraud_block_rate: float = Field(0.004, ge=0, le=0.2, description="legit accounts blocked for abuse/other")
    care_contact_rate: float = Field(0.25, ge=0, le=20, description="payment/other care contacts per account-year")

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> SynthParams:
        """A named preset (:data:`PROFILES`) with ``overrides`` on top."""
        if name not in PROFILES:
            raise SchemaError(f"profile: unknown synthetic-world profile {name!r}; expected one of {sorted(PROFILES)}")
        return cls(**{**PROFILES[name], **overrides})

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SchemaError(describe(exc, "SynthParams")) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> SynthParams:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise SchemaError(describe(exc, "SynthParams")) from None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        # Naive datetimes are read as UTC: the contract is UTC-only. Sub-second parts are dropped
        # because every generated timestamp has whole seconds.
        v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        return v.replace(microsecond=0)

    @model_validator(mode="after")
    def _consistent(self) -> SynthParams:
        if self.start.year < 1971:
            raise ValueError("start must be in 1971 or later")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        span = self.end - self.start
        if span < timedelta(days=2):
            raise ValueError("end - start must be at least 2 days")
        if timedelta(days=self.stream_days) >= span:
            raise ValueError("stream_days must be shorter than end - start")
        if self.ring_size_min > self.ring_size_max:
            raise ValueError("ring_size_min must not exceed ring_size_max")
        if self.ring_share + self.soft_ring_share + self.multi_account_share + self.ato_share > 0.5:
            raise ValueError("ring_share + soft_ring_share + multi_account_share + ato_share must not exceed 0.5")
        return self

    # derived values -------------------------------------------------------------------------------
    @property
    def t0(self) -> int:
        return int(self.start.timestamp())

    @property
    def t1(self) -> int:
        return int(self.end.timestamp())

    @property
    def cut(self) -> int:
        """First second that belongs to the stream."""
        return self.t1 - round(self.stream_days * 86400)

    @property
    def nat_pool_size(self) -> int:
        if self.carrier_nat_ips is not None:
            return self.carrier_nat_ips
        return int(min(200, max(50, self.customers // 250)))


# Named worlds. "classic": the defaults, where shared kit gives most fraud away (every model scores ~0.99).
# "hard": fraud that hides its sharing, takeovers visible only in edge timing, wrong blocks next to honest
# people, wrong unblocks, and a pattern (soft rings) that appears only in the last 150 days — calibrated in
# bench/RESULTS.md (bench/model.py section) so that neighbours' blocks alone and the GBDT no longer saturate.
PROFILES: dict[str, dict[str, Any]] = {
    "classic": {},
    "hard": dict(
        ring_share=0.008, soft_ring_share=0.012, multi_account_share=0.01, ato_share=0.006,
        stealth_ato_share=0.5, household_fp_share=0.02, fraud_lift_rate=0.05, resold_device_share=0.03,
        drift_days=150.0, detection_prob=0.5, soft_ring_detection_prob=0.35,
    ),
}
