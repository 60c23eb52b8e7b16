"""The identity graph's schema and id scheme — the one place every stage takes them from.

Customers point at the identifiers they used. Ids are deterministic (same input, same id) so the Spark
load, the stream consumer and a re-run all land on the same vertices and edges, and Neptune bulk-load
files can be produced without looking anything up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from identigraph.errors import SchemaError
from identigraph.graph.canonical import canonical_identifier, normalise_ip, strip_ascii  # noqa: F401 — re-exported

CUSTOMER = "customer"
# Reserved for the platform's drivers ("captains"): a second actor type linked to the same identifiers.
# Not built yet; listed so nobody reuses the label for something else.
RESERVED_LABELS = ("captain",)

# identifier vertex label -> (edge label from customer, input-contract column)
IDENTIFIERS: dict[str, tuple[str, str]] = {
    "device": ("has_device", "device_id"),
    "ip": ("used_ip", "ip"),
    "email": ("has_email", "email"),
    "phone": ("has_phone", "phone"),
    "card": ("has_card", "card_fingerprint"),
}
PII_LABELS = frozenset({"email", "phone"})
VERTEX_LABELS = (CUSTOMER, *IDENTIFIERS)
EDGE_LABELS = tuple(edge for edge, _ in IDENTIFIERS.values())
EDGE_TO_IDENTIFIER = {edge: label for label, (edge, _) in IDENTIFIERS.items()}

IDENTITY_EVENT_TYPES = ("signup", "login", "add_payment_method", "profile_update", "booking")
HISTORY_EVENT_TYPES = ("customer_created", "block", "unblock", "care_contact")
STREAM_EVENT_TYPES = (*IDENTITY_EVENT_TYPES, *HISTORY_EVENT_TYPES)

# Edge properties. Counts per event type sit beside the total so models can tell a card that was only
# added from one that paid for hundreds of bookings.
EDGE_TIME_PROPS = ("first_seen", "last_seen")
EDGE_COUNT_PROPS = ("event_count", *(f"n_{t}" for t in IDENTITY_EVENT_TYPES))
EDGE_PROPS = (*EDGE_TIME_PROPS, *EDGE_COUNT_PROPS)

# Customer properties (name -> Neptune CSV type): the input contract's, then a summary of the block and
# customer-care history known at the snapshot's as-of (the full history sits beside the graph).
CUSTOMER_PROPERTY_TYPES: dict[str, str] = {
    "created_at": "Date",
    "country": "String",
    "lifetime_value": "Double",
    "n_blocks": "Int",
    "last_block_at": "Date",
    "last_block_reason": "String",
    "last_block_source": "String",
    "last_block_rule": "String",
    "blocked": "Bool",
    "last_unblock_at": "Date",
    "n_block_reviews": "Int",
    "last_care_at": "Date",
}
CUSTOMER_PROPS = tuple(CUSTOMER_PROPERTY_TYPES)

# Identifier statistics, kept on every identifier vertex by every writer (Spark load by aggregation, the
# stream incrementally, the upserter by recount) so that no read ever counts or sorts a hub: a carrier-NAT IP
# with 5,000 customers costs one vertex read, not 5,000 edge reads. ``n_blocked``/``n_contested`` count linked
# customers whose ``blocked`` is true / whose ``n_block_reviews`` > 0 — they include any scored customer's own
# label, so they feed evidence and policy, never a model input as they are.
IDENTIFIER_PROPERTY_TYPES: dict[str, str] = {
    "n_customers": "Int",
    "first_seen": "Date",
    "last_seen": "Date",
    "n_blocked": "Int",
    "n_contested": "Int",
}
IDENTIFIER_PROPS = tuple(IDENTIFIER_PROPERTY_TYPES)
LABEL_DERIVED_IDENTIFIER_PROPS = ("n_blocked", "n_contested")


def vertex_property_types(label: str) -> dict[str, str]:
    """Neptune CSV types of a vertex label's properties, in header order."""
    if label == CUSTOMER:
        return CUSTOMER_PROPERTY_TYPES
    return IDENTIFIER_PROPERTY_TYPES if label in IDENTIFIERS else {}

_SEP = "\x1f"
EDGE_ID_HEX = 32


def customer_id(raw: str) -> str:
    """Vertex ids carry their label, so a customer id can never collide with an identifier's."""
    raw = _non_empty(raw, "customer_id")
    return f"{CUSTOMER}:{raw}"


def identifier_id(label: str, value: str) -> str:
    """Vertex id of an identifier. For email/phone ``value`` must already be the keyed hash; ip, device and
    card values are put through ``canonical.canonical_identifier`` (idempotent), as every writer does."""
    if label not in IDENTIFIERS:
        raise SchemaError(f"label: unknown identifier label {label!r}; expected one of {list(IDENTIFIERS)}")
    value = _non_empty(value, IDENTIFIERS[label][1])
    if label not in PII_LABELS:
        value = canonical_identifier(label, value)
    return f"{label}:{value}"


def edge_id(from_id: str, edge_label: str, to_id: str) -> str:
    """Hash of the triple: unambiguous whatever characters the opaque identifiers contain.

    SHA-256 because Spark computes it natively (``sha2``): the Spark job and this function must agree.
    """
    digest = hashlib.sha256(_SEP.join((from_id, edge_label, to_id)).encode()).hexdigest()[:EDGE_ID_HEX]
    return f"e:{digest}"


def _non_empty(value: Any, name: str) -> str:
    stripped = strip_ascii(value) if isinstance(value, str) else ""
    if not stripped:
        raise SchemaError(f"{name}: must be a non-empty string, got {value!r}")
    return stripped


@dataclass(frozen=True)
class VertexRecord:
    """Checked on construction so no writer can send a vertex with a foreign label, id or property."""

    id: str
    label: str
    props: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in VERTEX_LABELS:
            raise SchemaError(f"label: unknown vertex label {self.label!r}; expected one of {list(VERTEX_LABELS)}")
        if not self.id.startswith(self.label + ":"):
            raise SchemaError(f"id: vertex id {self.id!r} does not belong to label {self.label!r}")
        extra = set(self.props) - set(vertex_property_types(self.label))
        if extra:
            raise SchemaError(f"props: unknown {self.label} properties: {sorted(extra)}")


@dataclass(frozen=True)
class EdgeRecord:
    """State of one customer→identifier edge: cumulative counts and the first/last time it was seen."""

    from_id: str
    label: str
    to_id: str
    first_seen: datetime
    last_seen: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in EDGE_TO_IDENTIFIER:
            raise SchemaError(f"label: unknown edge label {self.label!r}; expected one of {list(EDGE_LABELS)}")
        if not self.from_id.startswith(CUSTOMER + ":"):
            raise SchemaError(f"from_id: edges start at a customer vertex, got {self.from_id!r}")
        if not self.to_id.startswith(EDGE_TO_IDENTIFIER[self.label] + ":"):
            raise SchemaError(f"to_id: {self.label} edges end at a {EDGE_TO_IDENTIFIER[self.label]} vertex")
        if self.first_seen > self.last_seen:
            raise SchemaError(f"first_seen: {self.first_seen} is after last_seen {self.last_seen}")
        unknown = set(self.counts) - set(EDGE_COUNT_PROPS)
        if unknown:
            raise SchemaError(f"counts: unknown count properties {sorted(unknown)}")
        if any((not isinstance(v, int)) or v < 0 for v in self.counts.values()):
            raise SchemaError("counts: must be non-negative integers")

    @cached_property
    def id(self) -> str:
        return edge_id(self.from_id, self.label, self.to_id)

    @property
    def identifier_label(self) -> str:
        return EDGE_TO_IDENTIFIER[self.label]

    def props(self) -> dict[str, Any]:
        out: dict[str, Any] = {"first_seen": self.first_seen, "last_seen": self.last_seen}
        for name in EDGE_COUNT_PROPS:
            out[name] = int(self.counts.get(name, 0))
        return out
