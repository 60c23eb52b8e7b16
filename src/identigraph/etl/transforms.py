"""DataFrame transforms from validated tables to graph elements — pure functions of their inputs.

They build exactly what the Python path builds: the same ids from ``graph.schema``, and the very same
normalisation and keyed hash — identifiers go through ``graph.canonical.canonical_identifier`` and
``graph.pseudonym.Pseudonymiser`` inside vectorised UDFs, so there is one implementation, not two.
The HMAC key reaches executors as a broadcast variable: it never appears in a query plan, ``explain()``,
the Spark UI or event logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from identigraph.errors import SchemaError
from identigraph.graph import schema
from identigraph.graph.canonical import canonical_identifier
from identigraph.graph.pseudonym import Pseudonymiser


def strip(col: Column) -> Column:
    """ASCII-whitespace trim, the twin of ``schema.strip_ascii``."""
    return F.regexp_replace(col, r"^\s+|\s+$", "")


def _or_none(fn: Any, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or not schema.strip_ascii(str(value)):
        return None
    try:
        return fn(str(value))
    except SchemaError:
        return None


def pseudonym_udf(kind: str, key_broadcast: Any) -> Any:
    """UDF: the keyed hash of a valid email/phone, null for a missing or invalid one."""

    @F.pandas_udf(StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted decorator form
    def pseudonymise(values: pd.Series) -> pd.Series:
        pseudo = Pseudonymiser(key_broadcast.value)
        fn = pseudo.email if kind == "email" else pseudo.phone
        return values.map(lambda v: _or_none(fn, v))

    return pseudonymise


def canonical_udf(label: str) -> Any:
    """UDF: ``graph.canonical.canonical_identifier(label, value)`` (what the stream and the API call too),
    null for a missing or invalid value."""

    @F.pandas_udf(StringType())  # type: ignore[call-overload]  # pyspark's stubs lack the type-hinted decorator form
    def canonical(values: pd.Series) -> pd.Series:
        return values.map(lambda v: _or_none(lambda x: canonical_identifier(label, x), v))

    return canonical


def normalise_ip(col: Column) -> Column:
    """Canonical address text, null for missing or invalid."""
    return canonical_udf("ip")(col)


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


def identifier_vertices(edges: DataFrame, customers: DataFrame) -> DataFrame:
    """Every identifier with its statistics (``schema.IDENTIFIER_PROPS``), exactly, by aggregation.

    ``customers`` are the customer vertices (``customer_vertices``): their ``blocked`` and
    ``n_block_reviews`` at as-of give ``n_blocked``/``n_contested``. The join is on the customer id and the
    aggregation combines per partition first, so a hub identifier is never gathered into one task.
    """
    status = customers.select(F.col("id").alias("from_id"), "blocked", "n_block_reviews")
    linked = edges.select("from_id", "to_id", "first_seen", "last_seen").join(status, "from_id", "left")
    stats = linked.groupBy("to_id").agg(
        F.count(F.lit(1)).cast("int").alias("n_customers"),
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen"),
        F.sum(F.when(F.col("blocked"), 1).otherwise(0)).cast("int").alias("n_blocked"),
        F.sum(F.when(F.col("n_block_reviews") > 0, 1).otherwise(0)).cast("int").alias("n_contested"))
    label = F.split(F.col("to_id"), ":", 2).getItem(0)
    return stats.select(F.col("to_id").alias("id"), label.alias("label"), *schema.IDENTIFIER_PROPS)


def history_at(blocks: DataFrame, care: DataFrame, as_of: datetime) -> tuple[DataFrame, DataFrame]:
    """What was known at ``as_of``: later blocks and contacts vanish, later un-blocks are not yet known."""
    ts = F.lit(as_of).cast("timestamp")
    blocks = blocks.filter(F.col("blocked_at") <= ts).withColumn(
        "unblocked_at", F.when(F.col("unblocked_at") <= ts, F.col("unblocked_at")))
    care = care.filter(F.col("contacted_at") <= ts)
    return blocks, care


def raw_id(col: str, label: str) -> Column:
    """``customer:c1`` → ``c1`` as a column (``records.customer_key`` in Python): ids are opaque and may
    contain ':', so cut the prefix, never split."""
    return F.expr(f"substring(`{col}`, {len(label) + 2})")


def customer_vertices(customers: DataFrame, edges: DataFrame, blocks: DataFrame, care: DataFrame) -> DataFrame:
    """Every customer known at as-of (table, events, history) with its properties and history summary.

    ``blocks``/``care`` must already be cut at as-of (``history_at``).
    """
    ids = (customers.select("customer_id")
           .unionByName(edges.select(raw_id("from_id", schema.CUSTOMER).alias("customer_id")))
           .unionByName(blocks.select("customer_id")).unionByName(care.select("customer_id"))
           .distinct())
    # "blocked": the latest block is newer than the latest lifting. The stream's unblock events name no block
    # (an unblock lifts whatever came before it), so this is the definition both paths can compute. The last
    # block (total order, so ties are deterministic) names the reason, source and rule.
    last_block = F.max_by(F.struct("reason", "source", "rule_name"),
                          F.struct("blocked_at", "reason", "source", F.coalesce("rule_name", F.lit(""))))
    b = blocks.groupBy("customer_id").agg(
        F.count(F.lit(1)).cast("int").alias("n_blocks"), F.max("blocked_at").alias("last_block_at"),
        last_block.alias("_last"), F.max("unblocked_at").alias("last_unblock_at"))
    b = b.withColumn("blocked", F.col("last_unblock_at").isNull() | (F.col("last_unblock_at") < F.col("last_block_at")))
    b = b.select("customer_id", "n_blocks", "last_block_at",
                 F.col("_last.reason").alias("last_block_reason"), F.col("_last.source").alias("last_block_source"),
                 F.col("_last.rule_name").alias("last_block_rule"), "blocked", "last_unblock_at")
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
