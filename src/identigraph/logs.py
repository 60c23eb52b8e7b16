"""Service logs: the standard ``logging`` module, one JSON object per line, one formatter for every service.

Call sites name an event and pass its fields: ``log.info("model_loaded", extra={"version": v})``. The
API server and the stream consumer call ``configure`` once where they start; the CLI keeps its own
human-readable handler. Fields are references and counts, never identifiers: as a last guard the
formatter replaces anything that parses as an IP address or looks like an email with ``[ip]``/``[email]``
(device ids and phones have no shape to recognise; call sites never pass them).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any

# the attributes every LogRecord has: anything else on a record came from ``extra=``
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_EMAIL = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6_LIKE = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?")


def _ip(match: re.Match[str]) -> str:
    text = match.group(0)
    for start in (0, len(text) - len(text.lstrip(":"))):  # "::1" whole, or "2001:db8::1" after "ip:"
        try:
            ipaddress.ip_address(text[start:].split("%", 1)[0])
        except ValueError:
            continue
        return text[:start] + "[ip]"
    return text  # a time, a version or a ratio: not an address


def scrub(text: str) -> str:
    """A log string with IP addresses and emails replaced: what a log holds is read by more people."""
    return _IPV6_LIKE.sub(_ip, _IPV4.sub(_ip, _EMAIL.sub("[email]", text)))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time, level, logger, event, then the ``extra=`` fields), so a log
    collector indexes the fields without parsing prose."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; values that do not serialise are written as text."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "event": scrub(record.getMessage())}
        out.update({k: _scrubbed(v) for k, v in record.__dict__.items() if k not in _RESERVED and k not in out})
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = out.get("error") or record.exc_info[0].__name__  # the class only: messages may hold values
        return json.dumps(out, default=str)


def configure(*service_loggers: str, stream: IO[str] | None = None) -> logging.Handler:
    """JSON lines on stderr for every ``identigraph`` logger, once, where a service process starts.

    The service's own loggers log at INFO (its events are its record); the rest of the package keeps the
    root's level, which the CLI's ``--verbose`` sets. ``identigraph`` stops propagating, so the CLI's rich
    handler on the root does not print each line a second time."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    package = logging.getLogger("identigraph")
    package.handlers[:] = [handler]
    package.setLevel(logging.getLogger().getEffectiveLevel())
    package.propagate = False
    for name in service_loggers:
        logging.getLogger(name).setLevel(logging.INFO)
    return handler
