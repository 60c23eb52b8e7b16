"""The one ISO-8601 parser: its two modes and the error the CLI prints."""

from datetime import datetime, timedelta, timezone

import pytest

from identigraph.errors import SchemaError
from identigraph.graph.records import customer_key
from identigraph.timestamps import as_utc, parse_field, parse_iso


def test_parse_iso_reads_z_and_naive_as_utc():
    assert parse_iso("2026-06-30T08:15:00Z") == datetime(2026, 6, 30, 8, 15, tzinfo=timezone.utc)
    assert parse_iso("2026-06-30T08:15:00").tzinfo is timezone.utc
    assert parse_iso("2026-06-30T10:15:00+02:00").utcoffset() == timedelta(0)


def test_parse_iso_as_written_keeps_naive_and_offsets():
    assert parse_iso("2026-06-30T08:15:00", to_utc=False).tzinfo is None
    assert parse_iso("2026-06-30T10:15:00+02:00", to_utc=False).utcoffset() == timedelta(hours=2)
    with pytest.raises(ValueError):
        parse_iso("yesterday")


def test_parse_field_names_the_field_and_passes_through():
    with pytest.raises(SchemaError, match="as_of: not an ISO-8601 timestamp: 'soon'"):
        parse_field("soon", "as_of")
    now = datetime.now()
    assert parse_field(now, "as_of") is now and parse_field(None, "as_of") is None
    assert as_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_customer_key_cuts_only_the_prefix():
    assert customer_key("customer:a:b") == "a:b"
    assert customer_key("c1") == "c1"
