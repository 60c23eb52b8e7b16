"""Request and response bodies: the contract other teams code against (and schemathesis tests)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from identigraph.graph.schema import IDENTITY_EVENT_TYPES

CUSTOMER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"  # no "@" and no "+": an email is never a customer id
# digits and separators only, seven digits or more: a phone (or card) number, not the platform's own id.
# Customer ids are written to the audit log and the review queue as given, so these are refused.
CONTACT_LIKE = r"^[-._:]*([0-9][-._:]*){7,}$"
_CONTACT_LIKE = re.compile(CONTACT_LIKE)
Action = Literal[IDENTITY_EVENT_TYPES]  # type: ignore[valid-type]


def looks_like_contact(value: str) -> bool:
    """A customer id that is an email or a phone is refused: it would put contact data in every record."""
    return _CONTACT_LIKE.match(value) is not None


def _not_contact(value: str) -> str:
    if looks_like_contact(value):
        raise ValueError("looks like a phone or card number; a customer id is the platform's own id")
    return value


CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID, description="the platform's customer id (new or existing)",
                                  json_schema_extra={"not": {"pattern": CONTACT_LIKE}}), AfterValidator(_not_contact)]


def customer_path() -> Any:
    """The customer id path parameter, checked like the body's customer_id."""
    return Path(pattern=CUSTOMER_ID, description="the platform's customer id")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Stricter than the graph's normalisation accepts, never looser: a value the schema allows is one the ETL
# would have hashed or canonicalised too, so the only 422 for an identifier is a schema-invalid one.
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
# digits and punctuation as people type them: ASCII, fullwidth, Arabic-Indic and Persian digits (the graph
# layer folds them all to one number, graph.canonical)
_DIGIT, _NONZERO, _PUNCT = "0-9\uff10-\uff19\u0660-\u0669\u06f0-\u06f9", "1-9\uff11-\uff19\u0661-\u0669\u06f1-\u06f9", \
    " ()\\-\u3000\uff08\uff09\uff0d"
Phone = Annotated[str, Field(pattern=rf"^(\+|00|\uff0b|\uff10\uff10|\u0660\u0660)[{_NONZERO}]([{_PUNCT}]*[{_DIGIT}]){{6,14}}[{_PUNCT}]*$",
                             max_length=32, description="E.164, spaces, dashes and brackets allowed")]
Ip = Annotated[str, Field(max_length=64, json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})]


class Identifiers(_Body):
    """What the caller saw at this action. Emails and phones are hashed on arrival and never stored raw."""

    device_id: str | None = Field(None, max_length=256)
    ip: Ip | None = None
    email: Email | None = None
    phone: Phone | None = None
    card_fingerprint: str | None = Field(None, max_length=256)


class ScoreRequest(_Body):
    """A customer to score, or a signup not yet in the graph described by its identifiers."""
    customer_id: CustomerId
    action: Action | None = Field(None, description="what the customer is doing; default from the config")
    identifiers: Identifiers | None = None
    explain: bool | None = Field(None, description="force (true) or skip (false) the model's attribution")


class Evidence(BaseModel):
    """An identifier the customer shares, with how many accounts share it and how many of them are blocked."""
    identifier_id: str
    identifier_label: str
    customers_total: int
    others_seen: int
    blocked: int
    contested: int
    block_reasons: list[str]
    created_within_days: float | None
    first_seen: str | None
    new_in_request: bool
    text: str


class ConnectionImpact(BaseModel):
    """How much one of the customer's links moved the model's score."""
    identifier_id: str
    relation: str
    impact: float
    impact_norm: float


class FeatureImpact(BaseModel):
    """How much one of the customer's own features moved the model's score."""
    name: str
    impact: float
    impact_norm: float


class Explanation(BaseModel):
    """Why the decision: the shared identifiers and, when asked for, the model's attributions."""
    evidence: list[Evidence]
    connections: list[ConnectionImpact] | None = None
    features: list[FeatureImpact] | None = None


class NeighbourhoodSummary(BaseModel):
    """How much graph the score saw, and whether caps cut it short."""
    customers: int
    identifiers: int
    capped_identifiers: int
    customer_cap_reached: bool


class ScoreResponse(BaseModel):
    """``neighbourhood`` and ``explanation`` (identifier ids, how many accounts share each, attributions) are
    identity data: null unless the key also holds ``identity:read``. ``score`` is null only in a degraded
    decision (graph or model out, or a customer the graph does not know, given without identifiers)."""

    customer_id: str
    score: float | None
    decision: Literal["allow", "review", "block"]
    reasons: list[str]
    model_version: str | None
    degraded: bool
    known_customer: bool
    request_id: str
    rules: list[str]
    threshold: float | None
    neighbourhood: NeighbourhoodSummary | None
    explanation: Explanation | None


class BatchResponse(BaseModel):
    """One result per request, in the order they were sent."""
    results: list[ScoreResponse]


class CustomerStatus(BaseModel):
    """The customer's block history as the graph holds it."""
    blocked: bool | None = None
    n_blocks: int | None = None
    n_block_reviews: int | None = None
    last_block_reason: str | None = None
    last_block_at: str | None = None
    created_at: str | None = None


class IdentityEdge(BaseModel):
    """One identifier the customer used, with when and how often."""
    identifier_id: str
    identifier_label: str
    first_seen: str | None = None
    last_seen: str | None = None
    event_count: int | None = None
    n_signup: int | None = None
    n_login: int | None = None
    n_add_payment_method: int | None = None
    n_profile_update: int | None = None
    n_booking: int | None = None


class IdentityResponse(BaseModel):
    """A customer's identifiers (emails and phones pseudonymised) and block status."""
    customer_id: str
    status: CustomerStatus
    identifiers: list[IdentityEdge]


class SharedIdentifier(BaseModel):
    """One of the customer's identifiers, with how many customers share it and whether the list was capped."""
    identifier_id: str
    identifier_label: str
    customers_total: int
    capped: bool


class ConnectedCustomer(BaseModel):
    """A customer reached through shared identifiers, how far away and through which."""
    customer_id: str
    depth: int
    via: list[str]
    status: CustomerStatus


class ConnectionsResponse(BaseModel):
    """The customers connected to one customer through shared identifiers."""
    customer_id: str
    depth: int
    identifiers: list[SharedIdentifier]
    customers: list[ConnectedCustomer]
    customer_cap_reached: bool


class ReloadRequest(_Body):
    """A model directory under models_root to load and switch to."""
    model_dir: str = Field(min_length=1, max_length=4096)


class ReloadResponse(BaseModel):
    """The version served before the reload and the one served now."""
    previous_version: str | None
    version: str


class Issue(BaseModel):
    """One field at fault, named by its location; the value sent is never repeated."""
    loc: list[str | int]
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """Every error answer: a message or the fields at fault, and the request id to quote."""
    detail: str | list[Issue]
    request_id: str | None = None
