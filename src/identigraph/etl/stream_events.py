"""Stream events (SQS message bodies) as typed models: parse, or say exactly why a message is poison.

The contract: unknown extra fields are ignored; a missing required field, a wrong type or an unknown
``event_type`` makes the message poison. Identifiers get the same checks as the historical load's rows
(valid IP, email, phone), so a value the Spark job would quarantine never enters the graph by the stream.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError, field_validator

from identigraph.errors import PoisonMessage, SchemaError
from identigraph.graph.canonical import canonical_card, canonical_device
from identigraph.graph.pseudonym import normalise_email, normalise_phone
from identigraph.graph.schema import STREAM_EVENT_TYPES, normalise_ip, strip_ascii
from identigraph.timestamps import parse_iso

NonEmpty = Annotated[StrictStr, Field(min_length=1)]
Optional = Annotated[StrictStr | None, Field(default=None)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1]
    event_id: NonEmpty
    customer_id: NonEmpty
    occurred_at: datetime

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_utc(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string")
        parsed = parse_iso(value, to_utc=False)
        if parsed.tzinfo is None:
            raise ValueError("must carry a time zone (UTC, e.g. 2026-06-30T08:15:00Z)")
        return parsed


class IdentityEvent(_Event):
    """A customer used identifiers (device, IP, email, phone, card): the edges the graph links accounts by."""
    event_type: Literal["signup", "login", "add_payment_method", "profile_update", "booking"]
    device_id: Optional = None
    ip: Optional = None
    email: Optional = None
    phone: Optional = None
    card_fingerprint: Optional = None

    @field_validator("device_id", "ip", "email", "phone", "card_fingerprint", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        # the same rule as the historical load: an empty identifier was not seen
        return None if isinstance(value, str) and not strip_ascii(value) else value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return _checked(normalise_ip, value)

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return _checked(canonical_device, value)

    @field_validator("card_fingerprint")
    @classmethod
    def _card(cls, value: str | None) -> str | None:
        return _checked(canonical_card, value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        _checked(normalise_email, value)
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        _checked(normalise_phone, value)
        return value


class CustomerCreated(_Event):
    """A new customer vertex, with the properties the model and the policy read."""
    event_type: Literal["customer_created"]
    country: Annotated[StrictStr | None, Field(default=None, pattern=r"^[A-Z]{2}$")] = None
    lifetime_value: Annotated[float, Field(strict=True, ge=0)] = 0.0


class Block(_Event):
    """A customer was blocked: the labels and the blocked-neighbour evidence are built from these."""
    event_type: Literal["block"]
    reason: Literal["fraud", "abuse", "other"]
    source: Literal["manual", "rule"]
    rule_name: Optional = None


class Unblock(_Event):
    """A block was lifted; the graph keeps when (``last_unblock_at``), so a later block is told apart."""
    event_type: Literal["unblock"]


class CareContact(_Event):
    """A customer contacted care: a block_review contact soon after a block contests it (labeling)."""
    event_type: Literal["care_contact"]
    topic: Literal["block_review", "payment", "other"]


StreamEvent = Annotated[
    IdentityEvent | CustomerCreated | Block | Unblock | CareContact, Field(discriminator="event_type")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(StreamEvent)


def _checked(fn: Any, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return fn(value)
    except SchemaError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def parse_message(body: str | bytes) -> IdentityEvent | CustomerCreated | Block | Unblock | CareContact:
    """The typed event, or PoisonMessage naming the field. Raw PII is never put in the reason."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"body: not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"body: a JSON object is required, got {type(data).__name__}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = [str(p) for p in err["loc"]]
            if len(loc) > 1 and loc[0] in STREAM_EVENT_TYPES:
                loc = loc[1:]  # drop the discriminator's branch name
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = ["event_type"]  # the discriminator itself is what is wrong
            errors.append(f"{'.'.join(loc) or 'body'}: {err['msg']}")
        raise PoisonMessage("; ".join(errors)) from None


TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "created_at", "country", "lifetime_value"),
    "identity_events": ("event_id", "customer_id", "event_type", "occurred_at", "device_id", "ip", "email", "phone",
                        "card_fingerprint"),
    "blocks": ("customer_id", "blocked_at", "reason", "source", "rule_name", "unblocked_at"),
    "care_contacts": ("customer_id", "contacted_at", "topic"),
}


def as_tables(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The historical-load view of stream events (message bodies): rows of the contract's four tables.

    What the equivalence test and the fault benchmark load with the Spark job to compare against the streamed
    graph. An ``unblock`` event names no block; it lifts the customer's latest block before it, which is what
    ``blocked`` means in both paths.
    """
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_COLUMNS}
    blocks: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: r["occurred_at"]):  # liftings apply to the blocks before them
        kind = r["event_type"]
        if kind in ("signup", "login", "add_payment_method", "profile_update", "booking"):
            out["identity_events"].append({k: r.get(k) for k in TABLE_COLUMNS["identity_events"]})
        elif kind == "customer_created":
            out["customers"].append({"customer_id": r["customer_id"], "created_at": r["occurred_at"],
                                     "country": r.get("country"), "lifetime_value": r.get("lifetime_value", 0)})
        elif kind == "block":
            row = {"customer_id": r["customer_id"], "blocked_at": r["occurred_at"], "reason": r["reason"],
                   "source": r["source"], "rule_name": r.get("rule_name"), "unblocked_at": None}
            out["blocks"].append(row)
            blocks.setdefault(r["customer_id"], []).append(row)
        elif kind == "unblock":
            before = [b for b in blocks.get(r["customer_id"], []) if _at(b["blocked_at"]) <= _at(r["occurred_at"])]
            if before:
                max(before, key=lambda b: _at(b["blocked_at"]))["unblocked_at"] = r["occurred_at"]
        elif kind == "care_contact":
            out["care_contacts"].append({"customer_id": r["customer_id"], "contacted_at": r["occurred_at"],
                                         "topic": r["topic"]})
    return out


def _at(value: str) -> datetime:
    return parse_iso(value, to_utc=False)
