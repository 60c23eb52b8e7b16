"""DataFrame transforms from validated tables to graph elements — pure functions of their inputs.

They build exactly what the Python path (``identigraph.graph.records``) builds: the same ids from
``graph.schema``, the same keyed hash as ``graph.pseudonym`` (HMAC-SHA256 composed from Spark's own
``sha2``, so no Python UDF touches the million-row path), the same normalisation. Tests hold the two
paths to each other.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from identigraph.graph import schema

_HMAC_BLOCK = 64


def strip(col: Column) -> Column:
    """ASCII-whitespace trim, the twin of ``schema.strip_ascii``."""
    return F.regexp_replace(col, r"^\s+|\s+$", "")


def hmac_sha256_hex(message: Column, key: bytes) -> Column:
    """HMAC-SHA256 (RFC 2104) of a UTF-8 string column, as lowercase hex, from Spark built-ins."""
    if len(key) > _HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_HMAC_BLOCK, b"\0")
    ipad = bytearray(b ^ 0x36 for b in key)
    opad = bytearray(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(message, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)


def _pseudonym(kind: str, normalised: Column, key: bytes) -> Column:
    digest = hmac_sha256_hex(F.concat(F.lit(f"{kind}:"), normalised), key)
    return F.substring(digest, 1, 32)


def normalise_email(col: Column, key: bytes) -> Column:
    """Keyed hash of a valid email, null for a missing or invalid one (mirrors ``normalise_email``)."""
    value = F.lower(strip(col))
    valid = value.contains("@") & ~value.startswith("@") & ~value.endswith("@")
    return F.when(col.isNotNull() & (strip(col) != "") & valid, _pseudonym("email", value, key))


def normalise_phone(col: Column, key: bytes) -> Column:
    """Keyed hash of a valid E.164 phone, null otherwise (mirrors ``normalise_phone``)."""
    value = F.regexp_replace(strip(col), r"[\s\-().]", "")
    value = F.when(value.startswith("00"), F.concat(F.lit("+"), value.substr(F.lit(3), F.lit(1 << 20)))) \
        .otherwise(value)
    valid = value.rlike(r"^\+[1-9][0-9]{6,14}$")
    return F.when(col.isNotNull() & (strip(col) != "") & valid, _pseudonym("phone", value, key))


@F.pandas_udf(StringType())
def _canonical_ip(values: pd.Series) -> pd.Series:
    def one(v: object) -> str | None:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return None
        try:
            return ipaddress.ip_address(str(v).strip()).compressed
        except ValueError:
            return None

    return values.map(one)


def normalise_ip(col: Column) -> Column:
    """Canonical address text, null for missing or invalid (Spark has no IP parser: a vectorised UDF)."""
    return _canonical_ip(col)


def identity_edges(events: DataFrame) -> DataFrame:
    """One row per (customer, identifier): ids, first/last seen, total and per-type counts."""
    parts = []
    for label, (edge_label, column) in schema.IDENTIFIERS.items():
        parts.append(
            events.filter(F.col(column).isNotNull()).select(
                F.concat(F.lit(f"{schema.CUSTOMER}:"), F.col("customer_id")).alias("from_id"),
                F.lit(edge_label).alias("label"),
                F.concat(F.lit(f"{label}:"), F.col(column)).alias("to_id"),
                "event_type", "occurred_at",
            )
        )
    exploded = parts[0]
    for part in parts[1:]:
        exploded = exploded.unionByName(part)
    counts = [F.count(F.lit(1)).alias("event_count")]
    counts += [F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).cast("long").alias(f"n_{t}")
               for t in schema.IDENTITY_EVENT_TYPES]
    agg = exploded.groupBy("from_id", "label", "to_id").agg(
        F.min("occurred_at").alias("first_seen"), F.max("occurred_at").alias("last_seen"), *counts)
    edge_id = F.concat(F.lit("e:"), F.substring(
        F.sha2(F.concat_ws(schema._SEP, "from_id", "label", "to_id"), 256), 1, schema.EDGE_ID_HEX))
    return agg.select(edge_id.alias("id"), "from_id", "to_id", "label", "first_seen", "last_seen",
                      *[F.col(c).cast("long").alias(c) for c in schema.EDGE_COUNT_PROPS])


def identifier_vertices(edges: DataFrame) -> DataFrame:
    label = F.split(F.col("to_id"), ":", 2).getItem(0)
    return edges.select(F.col("to_id").alias("id"), label.alias("label")).distinct()


def history_at(blocks: DataFrame, care: DataFrame, as_of: datetime) -> tuple[DataFrame, DataFrame]:
    """What was known at ``as_of``: later blocks and contacts vanish, later un-blocks are not yet known."""
    ts = F.lit(as_of).cast("timestamp")
    blocks = blocks.filter(F.col("blocked_at") <= ts).withColumn(
        "unblocked_at", F.when(F.col("unblocked_at") <= ts, F.col("unblocked_at")))
    care = care.filter(F.col("contacted_at") <= ts)
    return blocks, care


def customer_vertices(customers: DataFrame, edges: DataFrame, blocks: DataFrame, care: DataFrame) -> DataFrame:
    """Every customer known at as-of (table, events, history) with its properties and history summary.

    ``blocks``/``care`` must already be cut at as-of (``history_at``).
    """
    ids = (customers.select("customer_id")
           .unionByName(edges.select(F.substring_index("from_id", ":", -1).alias("customer_id")))
           .unionByName(blocks.select("customer_id")).unionByName(care.select("customer_id"))
           .distinct())
    # the last block decides "blocked" and its reason; ties broken by reason/source for determinism
    last_block = F.max_by(F.struct("reason", "source", "rule_name", "unblocked_at"),
                          F.struct("blocked_at", "reason", "source"))
    b = blocks.groupBy("customer_id").agg(
        F.count(F.lit(1)).cast("int").alias("n_blocks"), F.max("blocked_at").alias("last_block_at"),
        last_block.alias("_last"), F.max("unblocked_at").alias("last_unblock_at"))
    b = b.select("customer_id", "n_blocks", "last_block_at",
                 F.col("_last.reason").alias("last_block_reason"), F.col("_last.source").alias("last_block_source"),
                 F.col("_last.rule_name").alias("last_block_rule"),
                 F.col("_last.unblocked_at").isNull().alias("blocked"), "last_unblock_at")
    c = care.groupBy("customer_id").agg(
        F.sum(F.when(F.col("topic") == "block_review", 1).otherwise(0)).cast("int").alias("n_block_reviews"),
        F.max("contacted_at").alias("last_care_at"))
    out = ids.join(customers, "customer_id", "left").join(b, "customer_id", "left").join(c, "customer_id", "left")
    return out.select(
        F.concat(F.lit(f"{schema.CUSTOMER}:"), F.col("customer_id")).alias("id"),
        F.lit(schema.CUSTOMER).alias("label"),
        "created_at", "country", "lifetime_value",
        F.coalesce("n_blocks", F.lit(0)).alias("n_blocks"), "last_block_at", "last_block_reason",
        "last_block_source", "last_block_rule", F.coalesce("blocked", F.lit(False)).alias("blocked"),
        "last_unblock_at", F.coalesce("n_block_reviews", F.lit(0)).alias("n_block_reviews"), "last_care_at",
    )
