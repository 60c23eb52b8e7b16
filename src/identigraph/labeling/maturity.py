"""Label maturity: which customers existed at as-of, how old they were, and what their history makes them.

A block is not a label. A fraud block becomes ``matured_fraud`` only once it is older than the maturity
window and the customer neither contested it through customer care within the appeal window nor had it
lifted; other block reasons, lifted and contested blocks, young blocks and young accounts are *unknown*
(null label, excluded from training), never silently legitimate. Only an old enough, never blocked account
is ``matured_legit``.

Every input is cut at as-of here, whatever the caller did: a snapshot written later holds later facts
(blocks, un-blocks, care contacts, identifiers, customers created since), and none of them may move a label.
All comparisons are on integer microseconds, so window boundaries are exact.

Every fact about a customer meets in one aggregation (one shuffle): the job's cost on a small cluster is
the number of stages, not the rows.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from identigraph.etl.transforms import history_at
from identigraph.labeling.config import FRAUD_STATUSES, LEGIT_STATUSES, MaturityConfig

DAY_US = 86_400 * 1_000_000
_BLOCK = "struct<at:timestamp,reason:string,source:string,rule:string,unblocked_at:timestamp>"


def days_us(days: float) -> int:
    """Days as Spark's microsecond timestamps, so windows compare as integers."""
    return round(days * DAY_US)


def _us(col: Column) -> Column:
    return F.unix_micros(col)


def _facts(customers: DataFrame, edges: DataFrame, blocks: DataFrame, care: DataFrame, as_of: datetime,
           cfg: MaturityConfig) -> DataFrame:
    """One row per fact, one shape: ``customer_id, created_at, first_seen, block, review_at, fact``."""
    ts = F.lit(as_of).cast("timestamp")
    none_ts, none_block = F.lit(None).cast("timestamp"), F.lit(None).cast(_BLOCK)
    blocks, care = history_at(blocks, care, as_of)
    created = F.when(F.col("created_at") <= ts, F.col("created_at"))  # created later: unknown at as-of
    block = F.struct(F.col("blocked_at").alias("at"), "reason", "source", F.col("rule_name").alias("rule"),
                     "unblocked_at")
    review = F.when(F.col("topic").isin(cfg.review_topics), F.col("contacted_at"))
    return (
        customers.select("customer_id", created.alias("created_at"), none_ts.alias("first_seen"),
                         none_block.alias("block"), none_ts.alias("review_at"), created.isNotNull().alias("fact"))
        .unionByName(edges.filter(F.col("first_seen") <= ts).select(
            "customer_id", none_ts.alias("created_at"), "first_seen", none_block.alias("block"),
            none_ts.alias("review_at"), F.lit(True).alias("fact")))
        .unionByName(blocks.select("customer_id", none_ts.alias("created_at"), none_ts.alias("first_seen"),
                                   block.alias("block"), none_ts.alias("review_at"), F.lit(True).alias("fact")))
        .unionByName(care.select("customer_id", none_ts.alias("created_at"), none_ts.alias("first_seen"),
                                 none_block.alias("block"), review.alias("review_at"), F.lit(True).alias("fact")))
    )


def statuses(customers: DataFrame, edges: DataFrame, blocks: DataFrame, care: DataFrame, as_of: datetime,
             cfg: MaturityConfig) -> DataFrame:
    """One row per customer existing at as-of: ``customer_id, created, age_us, status, label, touched,
    maturity`` (the evidence struct).

    ``customers``: ``customer_id, created_at``; ``edges``: ``customer_id, first_seen``; ``blocks`` and
    ``care``: the snapshot's history tables. A customer exists at as-of when it was created by then or any
    fact about it (identifier, block, care contact) predates as-of; a creation time after as-of is unknown
    then, and age falls back to the earliest identifier seen. ``touched``: ever contested or lifted, on any
    block — such a customer is never a correction target.
    """
    as_of_us = F.lit(round(as_of.timestamp() * 1_000_000))
    per = (_facts(customers, edges, blocks, care, as_of, cfg).groupBy("customer_id").agg(
        F.min("created_at").alias("created_at"), F.min("first_seen").alias("first_seen"),
        F.collect_list("block").alias("blocks"), F.collect_list("review_at").alias("reviews"),
        F.max("fact").alias("exists"))
        .filter("exists"))

    # each block with its first review inside the appeal window (inclusive at both ends)
    appeal = days_us(cfg.appeal_days)

    def with_contest(b: Column) -> Column:
        inside = F.filter("reviews", lambda r: (_us(r) >= _us(b["at"])) & (_us(r) - _us(b["at"]) <= appeal))
        return F.struct(*[b[f].alias(f) for f in ("at", "reason", "source", "rule", "unblocked_at")],
                        F.array_min(inside).alias("contested_at"))

    # the latest block decides, ordered as the snapshot's own summary (last_block_*) so the two agree on ties
    ranked = F.transform("blocks", lambda b: F.struct(b["at"], b["reason"], b["source"],
                                                      F.coalesce(b["rule"], F.lit("")), b.alias("b")))
    a = (per.select("customer_id", F.coalesce("created_at", "first_seen").alias("created"),
                    F.transform("blocks", with_contest).alias("blocks"))
         .select("customer_id", "created", F.array_max(ranked)["b"].alias("block"),
                 F.exists("blocks", lambda b: b["contested_at"].isNotNull()).alias("ever_contested"),
                 F.exists("blocks", lambda b: b["unblocked_at"].isNotNull()).alias("ever_lifted"))
         .withColumn("age_us", as_of_us - _us(F.col("created"))))

    is_fraud_block = F.col("block.reason").isin(cfg.fraud_reasons)
    unconfirmed = F.lit(False)
    if cfg.unconfirmed_blocks is not None:
        guard = cfg.unconfirmed_blocks
        unconfirmed = (F.col("block.source").isin(guard.sources)
                       & (_us(F.col("block.at")) - _us(F.col("created")) >= days_us(guard.min_account_age_days)))
    status = (
        F.when(F.col("block").isNull(),
               F.when(F.col("age_us") >= days_us(cfg.legit_min_age_days), "matured_legit").otherwise("too_new"))
        .when(~is_fraud_block, "non_fraud_block")
        .when(F.col("block.contested_at").isNotNull(), "contested")
        .when(F.col("block.unblocked_at").isNotNull(), "lifted")
        .when(as_of_us - _us(F.col("block.at")) < days_us(cfg.maturity_days), "immature_block")
        .when(F.coalesce(unconfirmed, F.lit(False)), "unconfirmed_block")
        .otherwise("matured_fraud")
    )
    return a.select(
        "customer_id", "created", "age_us", status.alias("status"),
        (F.col("ever_contested") | F.col("ever_lifted")).alias("touched"),
        F.struct("created", "block", F.when(F.col("ever_contested"), True).alias("ever_contested"),
                 F.when(F.col("ever_lifted"), True).alias("ever_lifted")).alias("maturity"),
    ).withColumn("label", label_of(F.col("status")))


def label_of(status: Column) -> Column:
    """1 fraud, 0 legitimate, null unknown."""
    return (F.when(status.isin(*FRAUD_STATUSES), F.lit(1))
            .when(status.isin(*LEGIT_STATUSES), F.lit(0)).otherwise(F.lit(None)).cast("int"))
