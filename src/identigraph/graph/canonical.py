"""Canonical identifier text: the one function every writer of the graph puts identifiers through.

The Spark load (UDFs in ``etl.transforms``), the stream (``etl.stream_events`` and ``graph.records``) and
the scoring API (``serving.neighbourhood``) all call ``canonical_identifier`` (or the per-kind functions
below it), so a spelling that two of them could disagree on does not exist. What it removes is what
splits one identity into several vertices, by accident or on purpose:

- ``::ffff:86.255.61.50`` (an IPv4-mapped IPv6 address) is ``86.255.61.50``; a zone id (``fe80::1%eth0``)
  names an interface of the sender, not an address, and is refused;
- Unicode compatibility forms are folded (NFKC: fullwidth ``ｊａｎｅ@…``, ligatures, non-breaking spaces);
- invisible characters (zero-width spaces and joiners, bidi controls, soft hyphens, fillers, variation
  selectors, control characters) are refused rather than dropped: nobody types them, and silently dropping
  them would hide that somebody tried;
- an email whose local part or a domain label mixes scripts (a Cyrillic ``а`` among Latin letters: the
  classic homoglyph) is refused; a domain in Unicode and the same one in punycode are one domain;
- device ids are case-insensitive (IDFA, GAID and Android ids are hex or UUIDs that SDKs print in either
  case); card fingerprints are opaque tokens from the processor and keep their case;
- phone digits in other scripts (Arabic-Indic ``٠٥٠…``) are the same digits.

Pure ASCII input takes a fast path (the common case: checks only, nothing rewritten), so the API pays a few
microseconds per identifier. Errors name the field; for emails and phones they never repeat the value.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from identigraph.errors import SchemaError

_EDGE_SPACE = re.compile(r"^\s+|\s+$", re.ASCII)

# invisible: control, format (zero-width, bidi), surrogate, private use, unassigned, line/paragraph separators
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# letters and marks that render as nothing (Hangul fillers, braille blank, combining grapheme joiner)
_INVISIBLE_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0), range(0x180B, 0x1810))
# scripts written together in one word (Japanese, Korean): not a homoglyph mix
_SCRIPT_FAMILIES = ({"CJK", "HIRAGANA", "KATAKANA"}, {"CJK", "HANGUL"})

_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_PUNCT = re.compile(r"[\s\-().]", re.ASCII)


def strip_ascii(value: str) -> str:
    """Trim ASCII whitespace only, as the Spark job's regex does: both paths must build the same ids."""
    return _EDGE_SPACE.sub("", value)


def _invisible(ch: str) -> bool:
    if ch in _INVISIBLE_CHARS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
        return True
    if ch.isspace():  # NFKC has folded the compatibility spaces to " "; what is left is not a space we keep
        return ch != " "
    cp = ord(ch)
    return any(cp in r for r in _VARIATION_SELECTORS)


def canonical_text(value: str, field: str, echo: bool = True) -> str:
    """ASCII-trimmed, NFKC, no invisible characters. ``echo=False``: the message never shows the value."""
    if not isinstance(value, str):
        raise SchemaError(f"{field}: must be a string")
    text = strip_ascii(value)
    if text.isascii():
        if not text.isprintable():
            raise SchemaError(f"{field}: contains control characters")
    else:
        text = strip_ascii(unicodedata.normalize("NFKC", text))
        bad = next((ch for ch in text if _invisible(ch)), None)
        if bad is not None:
            shown = f" (U+{ord(bad):04X})" if echo else ""
            raise SchemaError(f"{field}: contains an invisible or control character{shown}")
    if not text:
        raise SchemaError(f"{field}: must be a non-empty string")
    return text


def _script(ch: str) -> str | None:
    """The script of a letter by its Unicode name's first word (LATIN, CYRILLIC, GREEK, CJK, ...)."""
    if not unicodedata.category(ch).startswith("L"):
        return None  # digits, punctuation, marks: common to every script
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _mixed_script(part: str) -> bool:
    scripts = {s for s in map(_script, part) if s is not None}
    if len(scripts) <= 1:
        return False
    return not any(scripts <= family for family in _SCRIPT_FAMILIES)


def normalise_ip(raw: str) -> str:
    """Canonical text of an IPv4/IPv6 address, so '::1', '0:0::1' and '::ffff:1.2.3.4' vs '1.2.3.4' agree."""
    text = canonical_text(raw, "ip")
    if "%" in text:
        raise SchemaError("ip: an interface zone id (%...) is not part of an address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SchemaError("ip: not a valid IPv4 or IPv6 address") from None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def canonical_device(raw: str) -> str:
    """SDKs print the same device id in either case, so case must not split one device into two vertices."""
    return canonical_text(raw, "device_id").lower()


def canonical_card(raw: str) -> str:
    """Card fingerprints are the processor's opaque tokens: their case is meaningful, so only the text checks apply."""
    return canonical_text(raw, "card_fingerprint")


def _idna(domain: str) -> str:
    if domain.isascii():
        return domain
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise SchemaError("email: the domain is not a valid internationalised domain name") from None


def normalise_email(raw: str) -> str:
    """Lower-cased, NFKC, domain in punycode; refused when invisible characters or mixed scripts are in it."""
    value = canonical_text(raw or "", "email", echo=False).lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise SchemaError("email: not an email address")  # the value itself is PII: not echoed
    if not value.isascii():
        if any(_mixed_script(p) for p in (local, *domain.split("."))):
            raise SchemaError("email: mixes scripts in one part (a homoglyph, e.g. a Cyrillic letter among Latin)")
        value = f"{local}@{_idna(domain)}"
    return value


def normalise_phone(raw: str) -> str:
    """E.164: punctuation removed, ``00`` → ``+``, digits of any script as ASCII digits."""
    value = canonical_text(raw or "", "phone", echo=False)
    if not value.isascii():
        value = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in value)
    value = _PHONE_PUNCT.sub("", value)
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _PHONE.match(value):
        raise SchemaError("phone: not an E.164 number")  # the value itself is PII: not echoed
    return value


_BY_LABEL = {"ip": normalise_ip, "device": canonical_device, "card": canonical_card,
             "email": normalise_email, "phone": normalise_phone}


def canonical_identifier(label: str, raw: str) -> str:
    """The canonical text of an identifier of kind ``label``: what the vertex id holds (ip, device, card) or
    what is hashed into it (email, phone). Raises SchemaError naming the field."""
    try:
        fn = _BY_LABEL[label]
    except KeyError:
        raise SchemaError(f"label: unknown identifier label {label!r}; expected one of {list(_BY_LABEL)}") from None
    return fn(raw)
