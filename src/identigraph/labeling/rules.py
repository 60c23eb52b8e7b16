"""Heuristic correction: graph rules that promote uncaught fraud to ``corrected_fraud``.

Many fraudsters are never blocked, so the maturity labels call them legitimate (or unknown). A rule looks
at each identifier the customer used (as of as-of) and asks, per identifier, whether it is small enough not
to be a hub (``max_customers``: carrier NAT, offices, VPN exits are shared by hundreds of honest people),
whether it is shared with other *matured* fraudsters (``min_fraud``, optionally only those created within
``fraud_created_within_hours`` of this customer) and whether it was used by a burst of accounts created
close together (``burst``). The rule fires when at least ``min_identifiers`` identifiers qualify and the
account's age fits.

Rules run in one pass against ``matured_fraud`` only: a corrected customer never makes another one, so an
error cannot snowball through a ring of households. All rules are one Spark pipeline: edges joined with
their customers' statuses, grouped by identifier (each non-hub identifier with its members), every rule's
counts for each candidate side by side, one aggregation per customer — it runs where the data is, at any
size, in a handful of stages.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from identigraph.labeling.config import LabelingConfig, Rule
from identigraph.labeling.maturity import days_us

MAX_EVIDENCE_IDENTIFIERS = 20  # per rule and customer; the true count is reported beside the list
HIT_TYPE = ("struct<rule:string,confidence:double,identifiers_matched:bigint,"
            "identifiers:array<struct<id:string,customers:bigint,fraud:bigint,burst:bigint>>>")


def _applies(rule: Rule, promote_from: list[str], c: Column) -> Column:
    """Whether candidate ``c`` on this identifier is the rule's to look at: its identifier types, under its
    hub guard, a customer it may promote, of an age it accepts."""
    cond = (F.col("id_type").isin(list(rule.via)) & (F.col("n_customers") <= rule.max_customers)
            & c["status"].isin(promote_from))
    if rule.min_account_age_days is not None:
        cond &= c["age_us"] >= days_us(rule.min_account_age_days)
    if rule.max_account_age_days is not None:
        cond &= c["age_us"] <= days_us(rule.max_account_age_days)
    return cond


def _count(members: str, c: Column, pred: Any) -> Column:
    """Members ``m`` of the identifier for which ``pred(m, microseconds between m's and c's creation)``."""
    return F.size(F.filter(members, lambda m: pred(
        m, F.abs(F.unix_micros(m["created"]) - F.unix_micros(c["created"])))))


def _qualifying(rule: Rule, i: int, promote_from: list[str], c: Column) -> Column:
    """Per (candidate, identifier): the identifier with the rule's counts when it qualifies, else null."""
    ok = _applies(rule, promote_from, c)
    fraud = burst = F.lit(None).cast("int")
    if rule.min_fraud is not None:
        window = None if rule.fraud_created_within_hours is None else days_us(rule.fraud_created_within_hours / 24)
        fraud = _count("members", c, lambda m, apart: (m["status"] == "matured_fraud")
                       & (m["customer_id"] != c["customer_id"]) & (F.lit(True) if window is None else apart <= window))
        ok &= fraud >= rule.min_fraud
    if rule.burst is not None:  # the customer is among the members: it counts itself
        burst = _count("members", c, lambda m, apart: apart <= days_us(rule.burst.within_days))
        ok &= burst >= rule.burst.min_accounts
    ident = F.struct(F.col("identifier").alias("id"), F.col("n_customers").cast("long").alias("customers"),
                     fraud.cast("long").alias("fraud"), burst.cast("long").alias("burst"))
    return F.when(ok, ident).alias(f"_q{i}")


def corrections(edges: DataFrame, accounts: DataFrame, cfg: LabelingConfig) -> DataFrame:
    """``customer_id, rules``: the customers at least one rule promotes, with every rule that fired on
    them (in config order) and the identifiers involved — the audit trail of each change.

    ``edges``: ``customer_id, id_type, identifier`` cut at as-of, one row per (customer, identifier) as the
    snapshot's id scheme guarantees; ``accounts``: ``customer_id, created, status, age_us, touched``.
    One pipeline for every rule: customers per identifier by a grouped count (combined per partition
    first, so a hub's rows are never gathered in one task), the hubs — identifiers above every rule's
    guard, few by nature — dropped with a broadcast anti-join, the remaining identifiers grouped with their
    members (bounded by the guard), each candidate's counts for every rule side by side, one aggregation
    per customer.
    """
    spark = edges.sparkSession
    if not cfg.rules:
        return spark.createDataFrame([], f"customer_id string, rules array<{HIT_TYPE}>")
    member = ["customer_id", "created", "status", "age_us", "touched"]
    guard = max(r.max_customers for r in cfg.rules)
    linked = edges.select("customer_id", "id_type", "identifier").join(accounts.select(*member), "customer_id")
    hubs = linked.groupBy("identifier").count().filter(F.col("count") > guard).select("identifier")
    groups = (linked.join(F.broadcast(hubs), "identifier", "left_anti")
              .groupBy("identifier", "id_type")
              .agg(F.collect_list(F.struct(*member)).alias("members"))
              .withColumn("n_customers", F.size("members")))
    c = F.col("c")
    any_rule = F.lit(False)
    for rule in cfg.rules:
        any_rule |= _applies(rule, cfg.rule_promote_from(rule), c)
    cand = groups.select("*", F.explode("members").alias("c")).filter(any_rule & ~c["touched"])
    per_ident = cand.select(c["customer_id"].alias("customer_id"), *[
        _qualifying(rule, i, cfg.rule_promote_from(rule), c) for i, rule in enumerate(cfg.rules)])
    aggs = []
    for i in range(len(cfg.rules)):
        aggs += [F.count(f"_q{i}").alias(f"_n{i}"), F.sort_array(F.collect_list(f"_q{i}")).alias(f"_ids{i}")]
    per_customer = per_ident.groupBy("customer_id").agg(*aggs)
    hits = F.array(*[
        F.when(F.col(f"_n{i}") >= rule.min_identifiers, F.struct(
            F.lit(rule.name).alias("rule"), F.lit(rule.confidence).alias("confidence"),
            F.col(f"_n{i}").alias("identifiers_matched"),
            F.slice(f"_ids{i}", 1, MAX_EVIDENCE_IDENTIFIERS).alias("identifiers")))
        for i, rule in enumerate(cfg.rules)])
    return (per_customer.select("customer_id", F.filter(hits, lambda h: h.isNotNull()).alias("rules"))
            .filter(F.size("rules") > 0))
