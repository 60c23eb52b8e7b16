"""Service logs: one JSON object per line, the ``extra=`` fields as keys, never a raw IP or email."""

from __future__ import annotations

import io
import json
import logging

import pytest

from identigraph import logs


@pytest.fixture
def configured():
    package = logging.getLogger("identigraph")
    saved = package.handlers[:], package.level, package.propagate, logging.getLogger("identigraph.svc").level
    stream = io.StringIO()
    logs.configure("identigraph.svc", stream=stream)
    yield stream
    package.handlers[:], package.level, package.propagate = saved[0], saved[1], saved[2]
    logging.getLogger("identigraph.svc").setLevel(saved[3])


def test_one_json_object_per_line_with_the_extra_fields(configured):
    log = logging.getLogger("identigraph.svc.part")
    log.info("model_loaded", extra={"version": "v3", "previous": None, "path": "/models/v3", "n": 2})
    log.warning("graph_unavailable", extra={"error": "first line\nsecond line", "backoff_s": 0.5})
    lines = configured.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "model_loaded" and first["level"] == "info" and first["logger"] == "identigraph.svc.part"
    assert (first["version"], first["previous"], first["path"], first["n"]) == ("v3", None, "/models/v3", 2)
    assert second["error"] == "first line\nsecond line" and second["backoff_s"] == 0.5
    assert first["ts"].endswith("+00:00")


def test_no_raw_ip_or_email_reaches_the_log(configured):
    log = logging.getLogger("identigraph.svc")
    log.error("graph_refused_batch", extra={"error": "vertex ip:203.0.113.9 and ip:2001:db8::17 refused",
                                            "nested": {"by": ["someone@example.com"]}, "at": "22:40:11.5"})
    log.info("probe from 198.51.100.4")
    text = configured.getvalue()
    for raw in ("203.0.113.9", "2001:db8::17", "someone@example.com", "198.51.100.4"):
        assert raw not in text
    first = json.loads(text.splitlines()[0])
    assert first["error"] == "vertex ip:[ip] and ip:[ip] refused" and first["nested"] == {"by": ["[email]"]}
    assert first["at"] == "22:40:11.5"  # a time is not an address
    assert json.loads(text.splitlines()[1])["event"] == "probe from [ip]"


def test_the_package_keeps_the_roots_level_and_the_service_logs_at_info(configured):
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the CLI without --verbose
    try:
        logs.configure("identigraph.svc", stream=configured)
    finally:
        root.setLevel(level)
    logging.getLogger("identigraph.other").info("retry")
    logging.getLogger("identigraph.other").warning("retries_exhausted")
    logging.getLogger("identigraph.svc").info("shown")
    events = [json.loads(line)["event"] for line in configured.getvalue().splitlines()]
    assert events == ["retries_exhausted", "shown"]


def test_an_exception_is_logged_by_its_class_only(configured):
    try:
        raise ValueError("holds a value: 10.1.2.3")
    except ValueError:
        logging.getLogger("identigraph.svc").exception("internal_error")
    record = json.loads(configured.getvalue())
    assert record["error"] == "ValueError" and "10.1.2.3" not in configured.getvalue()
