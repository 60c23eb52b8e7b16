"""Reviewers' verdicts as labels: the review console's ``verdicts`` table read into the labeling job.

A person who looked at the evidence and said "fraud" or "legitimate" is the most trustworthy label the
platform has, so a verdict overrides maturity and correction: ``reviewed_fraud`` (label 1) and
``reviewed_legit`` (label 0). A customer confirmed legitimate is never promoted to fraud by a correction
rule — the rule may still fire and is listed in the evidence, but the status stays the reviewer's.
``escalate`` is not an answer and changes nothing. Per customer the latest answering verdict decided at
or before the as-of counts, so labels rebuilt for a past cut do not see verdicts given after it.

The table is read read-only (``mode=ro``) straight from the console's sqlite file (or a copy of it): the
labeling job never writes to the console's store.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from identigraph.errors import SchemaError
from identigraph.timestamps import as_utc, parse_iso

REVIEWED_FRAUD, REVIEWED_LEGIT = "reviewed_fraud", "reviewed_legit"
STATUS_OF = {"confirm_fraud": REVIEWED_FRAUD, "legitimate": REVIEWED_LEGIT}
SCHEMA = "customer_id string, verdict string, decided_at timestamp, verdict_id long, reviewer string"


def read_verdicts(path: Path, as_of: datetime) -> list[tuple]:
    """The latest answering verdict per customer at ``as_of``: (customer, verdict, decided_at, id, reviewer)."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"verdicts: {path} is not a file (the review console's store)")
    cut = as_utc(as_of)
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT customer_id, verdict, decided_at, verdict_id, reviewer FROM verdicts "
                              "WHERE verdict IN ('confirm_fraud', 'legitimate') ORDER BY decided_at, verdict_id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SchemaError(f"verdicts: {path} has no readable verdicts table ({exc})") from None
    latest: dict[str, tuple] = {}
    for customer, verdict, decided, vid, reviewer in rows:
        at = parse_iso(decided, to_utc=False)
        if at <= cut:
            latest[customer] = (customer, verdict, at.replace(tzinfo=None), int(vid), reviewer)
    return sorted(latest.values())


def verdict_frame(spark: SparkSession, path: Path, as_of: datetime) -> DataFrame:
    """The verdicts as a Spark frame the label frame joins on customer_id."""
    # timestamps go in as naive UTC: the job's Spark session runs in UTC like the rest of the labels
    return spark.createDataFrame(read_verdicts(path, as_of), SCHEMA)


def overridden(status: Column) -> Column:
    """The status after the reviewer's verdict (the frame joined with ``verdict_frame`` on customer_id)."""
    return (F.when(F.col("verdict") == "confirm_fraud", F.lit(REVIEWED_FRAUD))
            .when(F.col("verdict") == "legitimate", F.lit(REVIEWED_LEGIT)).otherwise(status))


def review_evidence() -> Column:
    """The verdict as evidence in labels.csv, so a reviewer's override is visible next to the rules'."""
    return F.when(F.col("verdict").isNotNull(), F.struct(
        "verdict", "decided_at", "verdict_id", "reviewer")).alias("review")
