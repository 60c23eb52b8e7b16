"""What the API writes down about a decision (audit line, review case) holds references, not identifiers.

IPs, device ids and card fingerprints are personal data, and even the graph's email/phone ids are stable
handles on a person; an audit file or a queue message is copied, exported and kept far longer than the
graph. So records name an identifier by a keyed reference, ``<label>~<20 hex>`` (HMAC with the platform's
pseudonymisation key under its own domain): the same identifier always gets the same reference, so cases
can be grouped and compared, and a service holding the key (the review console) can match a reference
against a customer's identifiers, but the file alone leads to nobody.
"""

from __future__ import annotations

from typing import Any

from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.serving import explain

_REF_HEX = 20


def identifier_ref(pseudo: Pseudonymiser, vertex_id: str) -> str:
    """A keyed reference to an identifier: records can be joined on it but never read back to the raw value."""
    label = vertex_id.split(":", 1)[0]
    return f"{label}~{pseudo.digest('record-ref', vertex_id)[:_REF_HEX]}"


def evidence_for_record(items: list[dict[str, Any]], pseudo: Pseudonymiser) -> list[dict[str, Any]]:
    """Evidence items with the identifier replaced by its reference (in the text too)."""
    out = []
    for item in items:
        ref = identifier_ref(pseudo, item["identifier_id"])
        rest = {k: v for k, v in item.items() if k not in ("identifier_id", "text")}
        out.append({"identifier_ref": ref, **rest, "text": explain.describe(item, shown_as=ref)})
    return out


def connections_for_record(rows: list[dict[str, Any]] | None, pseudo: Pseudonymiser) -> list[dict[str, Any]] | None:
    """Model attributions with identifier references instead of ids, as the review queue and audit keep them."""
    if rows is None:
        return None
    return [{"identifier_ref": identifier_ref(pseudo, r["identifier_id"]),
             **{k: v for k, v in r.items() if k != "identifier_id"}} for r in rows]
