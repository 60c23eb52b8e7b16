"""Reading and validating the input contract's four tables in Spark.

Every validator returns ``(good, bad)``: ``bad`` carries the row (as text; email and phone redacted;
duplicates as normalised for comparison) and a ``reason`` naming the field — the first rule the row
broke. Nothing is dropped silently: ``good`` + ``bad`` always account for every input row (the job checks).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from identigraph.errors import SchemaError
from identigraph.etl import fs as fsys
from identigraph.etl.transforms import canonical_udf, normalise_ip, pseudonym_udf, strip
from identigraph.graph.schema import IDENTITY_EVENT_TYPES

TABLES: dict[str, list[str]] = {
    "customers": ["customer_id", "created_at", "country", "lifetime_value"],
    "identity_events": ["event_id", "customer_id", "event_type", "occurred_at", "device_id", "ip", "email",
                        "phone", "card_fingerprint"],
    "blocks": ["customer_id", "blocked_at", "reason", "source", "rule_name", "unblocked_at"],
    "care_contacts": ["customer_id", "contacted_at", "topic"],
}
BLOCK_REASONS = ("fraud", "abuse", "other")
BLOCK_SOURCES = ("manual", "rule")
CARE_TOPICS = ("block_review", "payment", "other")
PII_COLUMNS = ("email", "phone")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Source:
    """Where the four tables come from: a folder (URI) of the contract's files, or Hive tables through the
    session's metastore (``tables``: contract name → ``db.table``)."""

    directory: str | None = None
    tables: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return self.directory or ", ".join(f"{k}={v}" for k, v in sorted(self.tables.items()))


def source(directory: str | Path | None = None, tables: list[str] | None = None) -> Source:
    """``tables``: one database name (its ``customers``, ``identity_events``, ``blocks``, ``care_contacts``),
    ``db.table`` entries whose table is a contract name, or ``name=db.table`` entries."""
    if (directory is None) == (not tables):
        raise SchemaError("input: give either an input folder or --input-table, not both or neither")
    if directory is not None:
        return Source(directory=fsys.normalise(directory))
    mapping: dict[str, str] = {}
    for item in tables or []:
        if "=" in item:
            name, table = item.split("=", 1)
        elif "." in item:
            name, table = item.rsplit(".", 1)[1], item
        else:  # a database: every contract table in it
            mapping.update({name: f"{item}.{name}" for name in TABLES})
            continue
        if name not in TABLES:
            raise SchemaError(f"input table {item!r}: {name!r} is not one of {', '.join(TABLES)} "
                              "(use NAME=db.table to map another table name)")
        mapping[name] = table
    missing = [name for name in TABLES if name not in mapping]
    if missing:
        raise SchemaError(f"input tables: no table given for {', '.join(missing)}")
    return Source(tables=mapping)


def find_table(fs: fsys.FS, directory: str, name: str) -> tuple[str, str]:
    """The contract accepts Parquet or (gzipped) CSV per table, so the reader must find which one was delivered."""
    for suffix, fmt in ((".parquet", "parquet"), (".csv.gz", "csv"), (".csv", "csv")):
        uri = fsys.join(directory, f"{name}{suffix}")
        if fs.exists(uri):
            return uri, fmt
    raise SchemaError(f"{name}: no {name}.parquet, {name}.csv.gz or {name}.csv in {directory}")


MALFORMED = "_malformed"


def _data_files(fs: fsys.FS, uri: str) -> list[fsys.Entry]:
    if not fs.is_dir(uri):
        return [e for e in fs.list(fsys.parent(uri)) if e.uri.rstrip("/") == uri.rstrip("/")] or \
            [fsys.Entry(uri, 0, False)]
    return [e for e in fs.list(uri, recursive=True)
            if not e.is_dir and not e.name.startswith(("_", ".")) and e.size > 0]


def _csv_header(fs: fsys.FS, uri: str) -> list[str]:
    files = _data_files(fs, uri)
    if not files:
        return []
    return next(csv.reader([fsys.first_line(fs, files[0].uri)]), [])


def partitions(spark: SparkSession, fs: fsys.FS, src: Source, name: str, column: str) -> list[str] | None:
    """The values of the table's date partition column (sorted), or None when it is not partitioned by it.

    Hive: the metastore's partition list (no data read). Files: ``NAME.parquet/<column>=<value>/`` folders."""
    if src.tables:
        table = src.tables[name]
        cols = [c for c in spark.catalog.listColumns(table) if c.isPartition]
        if column not in [c.name for c in cols]:
            return None
        values = set()
        for row in spark.sql(f"SHOW PARTITIONS {table}").collect():
            for part in row[0].split("/"):
                key, _, value = part.partition("=")
                if key == column:
                    values.add(value)
        return sorted(values)
    uri, _ = find_table(fs, src.directory or "", name)
    if not fs.is_dir(uri):
        return None
    values = {e.name.split("=", 1)[1] for e in fs.list(uri) if e.is_dir and e.name.startswith(f"{column}=")}
    return sorted(values) if values else None


def input_bytes(fs: fsys.FS, src: Source, name: str) -> int:
    """Size of a table's files where it can be known cheaply (files input); 0 otherwise."""
    if src.tables:
        return 0
    uri, _ = find_table(fs, src.directory or "", name)
    return sum(e.size for e in _data_files(fs, uri))


def read_table(spark: SparkSession, fs: fsys.FS, src: Source, name: str, column: str = "dt",
               only: list[str] | None = None) -> DataFrame:
    """All contract columns as strings (Parquet/Hive timestamps become ISO text), missing ones null, plus a
    ``_malformed`` flag for CSV lines whose fields do not line up with the header.

    ``only``: read just these values of the date partition ``column`` (Spark prunes the rest: the
    metastore's partitions for Hive, the folders for files)."""
    if src.tables:
        df = spark.table(src.tables[name]).withColumn(MALFORMED, F.lit(False))
    else:
        uri, fmt = find_table(fs, src.directory or "", name)
        if fmt == "parquet":
            df = spark.read.parquet(uri).withColumn(MALFORMED, F.lit(False))
        else:
            # Every column as text in the header's own order (validation, not the reader, decides what a
            # bad value is) plus Spark's corrupt-record column, so a line with a stray comma is caught
            # instead of shifting a phone number into the card column.
            header = _csv_header(fs, uri)
            schema = StructType([StructField(c, StringType()) for c in header] +
                                [StructField("_corrupt", StringType())])
            df = (spark.read.schema(schema).option("header", True).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", "_corrupt").option("escape", '"').csv(uri))
            df = df.withColumn(MALFORMED, F.col("_corrupt").isNotNull()).drop("_corrupt")
    if only is not None:
        df = df.filter(F.col(column).isin(list(only)))
    cols = []
    for col in TABLES[name]:
        if col not in df.columns:
            cols.append(F.lit(None).cast("string").alias(col))
        elif dict(df.dtypes)[col].startswith("timestamp"):
            cols.append(F.date_format(F.col(col), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").alias(col))
        else:
            cols.append(F.col(col).cast("string").alias(col))
    return df.select(*cols, MALFORMED)


def _ts(col: str) -> Column:
    return F.expr(f"try_cast({col} as timestamp)")


def _blank(col: str) -> Column:
    return F.col(col).isNull() | (strip(F.col(col)) == "")


def _first_failure(rules: list[tuple[Column, str]]) -> Column:
    expr = F.lit(None).cast("string")
    for failed, reason in reversed(rules):
        expr = F.when(failed, F.lit(reason)).otherwise(expr)
    return expr


MALFORMED_REASON = "row: malformed CSV line (its fields do not match the header)"


def _split(df: DataFrame, reason: Column, table: str) -> tuple[DataFrame, DataFrame]:
    # cached: both halves come from one pass over the input (the job clears the cache when it ends)
    if MALFORMED not in df.columns:  # frames not read by read_table (Parquet-like, already typed)
        df = df.withColumn(MALFORMED, F.lit(False))
    reason = F.when(F.col(MALFORMED), F.lit(MALFORMED_REASON)).otherwise(reason)
    df = df.withColumn("_reason", reason).persist()
    good = df.filter(F.col("_reason").isNull()).drop("_reason", MALFORMED)
    bad = df.filter(F.col("_reason").isNotNull())
    return good, quarantine_rows(bad, table)


def quarantine_rows(bad: DataFrame, table: str) -> DataFrame:
    """``{table, reason, row}`` with the columns as text; raw email/phone never leave the job, and a
    malformed line keeps no field at all (any of them might hold a shifted phone number)."""
    malformed = F.col(MALFORMED) if MALFORMED in bad.columns else F.lit(False)
    cols = []
    for col in TABLES[table]:
        value = F.col(col).cast("string")
        if col in PII_COLUMNS:
            value = F.when(F.col(col).isNull(), F.lit(None)).otherwise(F.lit(REDACTED))
        cols.append(F.when(malformed, F.lit(None).cast("string")).otherwise(value).alias(col))
    return bad.select(F.lit(table).alias("table"), F.col("_reason").alias("reason"), F.struct(*cols).alias("row"))


def validate_customers(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Customers anchor every other table, so a bad id, timestamp, country or value is quarantined here, not loaded."""
    df = df.withColumn("_created", _ts("created_at")).withColumn("_ltv", F.expr("try_cast(lifetime_value as double)"))
    rules = [
        (_blank("customer_id"), "customer_id: missing"),
        (_blank("created_at") | F.col("_created").isNull(), "created_at: missing or not an ISO-8601 timestamp"),
        (F.col("country").isNotNull() & ~F.col("country").rlike("^[A-Z]{2}$"),
         "country: not an ISO 3166-1 alpha-2 code"),
        (F.col("lifetime_value").isNotNull() & F.col("_ltv").isNull(), "lifetime_value: not a number"),
        (F.col("_ltv") < 0, "lifetime_value: negative"),
    ]
    good, bad = _split(df, _first_failure(rules), "customers")
    good = good.select(strip(F.col("customer_id")).alias("customer_id"), F.col("_created").alias("created_at"),
                       "country", F.coalesce(F.col("_ltv"), F.lit(0.0)).alias("lifetime_value"))
    good, dupes = _dedupe(good, ["customer_id"], ["created_at", "country", "lifetime_value"], "customers",
                          "customer_id: duplicate")
    return good, bad.unionByName(dupes)


def validate_events(df: DataFrame, key: bytes) -> tuple[DataFrame, DataFrame]:
    """Valid events with normalised, pseudonymised identifiers; duplicates of an event_id quarantined."""
    key_bc = df.sparkSession.sparkContext.broadcast(key)
    df = (df.withColumn("_at", _ts("occurred_at"))
            .withColumn("_ip", normalise_ip(F.col("ip")))
            .withColumn("_device", canonical_udf("device")(F.col("device_id")))
            .withColumn("_card", canonical_udf("card")(F.col("card_fingerprint")))
            .withColumn("_email", pseudonym_udf("email", key_bc)(F.col("email")))
            .withColumn("_phone", pseudonym_udf("phone", key_bc)(F.col("phone"))))
    # From here on raw email/phone survive only as "present or not": nothing cached, spilled or
    # quarantined downstream holds them.
    for col in PII_COLUMNS:
        df = df.withColumn(col, F.when(~_blank(col), F.lit(REDACTED)))
    rules = [
        (_blank("event_id"), "event_id: missing"),
        (_blank("customer_id"), "customer_id: missing"),
        (~F.coalesce(strip(F.col("event_type")).isin(*IDENTITY_EVENT_TYPES), F.lit(False)),
         "event_type: unknown event type"),
        (_blank("occurred_at") | F.col("_at").isNull(), "occurred_at: missing or not an ISO-8601 timestamp"),
        (~_blank("ip") & F.col("_ip").isNull(), "ip: not a valid IPv4 or IPv6 address"),
        (~_blank("device_id") & F.col("_device").isNull(), "device_id: invisible or control characters"),
        (~_blank("card_fingerprint") & F.col("_card").isNull(), "card_fingerprint: invisible or control characters"),
        (~_blank("email") & F.col("_email").isNull(), "email: not an email address"),
        (~_blank("phone") & F.col("_phone").isNull(), "phone: not an E.164 number"),
    ]
    good, bad = _split(df, _first_failure(rules), "identity_events")

    good = good.select(
        strip(F.col("event_id")).alias("event_id"), strip(F.col("customer_id")).alias("customer_id"),
        strip(F.col("event_type")).alias("event_type"), F.col("_at").alias("occurred_at"),
        F.col("_device").alias("device_id"), F.col("_ip").alias("ip"), F.col("_email").alias("email"),
        F.col("_phone").alias("phone"), F.col("_card").alias("card_fingerprint"),
        # presence markers (already redacted above), so a quarantined duplicate shows what it carried
        F.col("email").alias("_raw_email"), F.col("phone").alias("_raw_phone"),
    )
    good, dupes = _dedupe(good, ["event_id"], ["occurred_at", "customer_id", "event_type", "device_id", "ip",
                                               "email", "phone", "card_fingerprint"],
                          "identity_events", "event_id: duplicate")
    return good.drop("_raw_email", "_raw_phone"), bad.unionByName(dupes)


def _dedupe(df: DataFrame, keys: list[str], order: list[str], table: str, reason: str) -> tuple[DataFrame, DataFrame]:
    """Keep one row per key (deterministically: the smallest by ``order``); quarantine the rest."""
    w = Window.partitionBy(*keys).orderBy(*[F.col(c).asc_nulls_last() for c in order])
    ranked = df.withColumn("_rn", F.row_number().over(w))
    good = ranked.filter(F.col("_rn") == 1).drop("_rn")
    extra = ranked.filter(F.col("_rn") > 1).withColumn("_reason", F.lit(reason))
    if table == "identity_events":
        extra = extra.withColumn("email", F.col("_raw_email")).withColumn("phone", F.col("_raw_phone"))
    for col in TABLES[table]:
        if col not in extra.columns:
            extra = extra.withColumn(col, F.lit(None).cast("string"))
    return good, quarantine_rows(extra, table)


def validate_blocks(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Blocks become the fraud labels, so only rows with a known reason, source and a consistent lifting are kept."""
    df = df.withColumn("_blocked", _ts("blocked_at")).withColumn("_unblocked", _ts("unblocked_at"))
    rules = [
        (_blank("customer_id"), "customer_id: missing"),
        (_blank("blocked_at") | F.col("_blocked").isNull(), "blocked_at: missing or not an ISO-8601 timestamp"),
        (~F.coalesce(F.col("reason").isin(*BLOCK_REASONS), F.lit(False)), "reason: not one of fraud, abuse, other"),
        (~F.coalesce(F.col("source").isin(*BLOCK_SOURCES), F.lit(False)), "source: not one of manual, rule"),
        (~_blank("unblocked_at") & F.col("_unblocked").isNull(), "unblocked_at: not an ISO-8601 timestamp"),
        (F.col("_unblocked") < F.col("_blocked"), "unblocked_at: before blocked_at"),
    ]
    good, bad = _split(df, _first_failure(rules), "blocks")
    good = good.select(strip(F.col("customer_id")).alias("customer_id"), F.col("_blocked").alias("blocked_at"),
                       "reason", "source", "rule_name", F.col("_unblocked").alias("unblocked_at"))
    return good, bad


def validate_care(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Care contacts mark contested blocks, so a row without a customer, a time or a known topic cannot count."""
    df = df.withColumn("_at", _ts("contacted_at"))
    rules = [
        (_blank("customer_id"), "customer_id: missing"),
        (_blank("contacted_at") | F.col("_at").isNull(), "contacted_at: missing or not an ISO-8601 timestamp"),
        (~F.coalesce(F.col("topic").isin(*CARE_TOPICS), F.lit(False)),
         "topic: not one of block_review, payment, other"),
    ]
    good, bad = _split(df, _first_failure(rules), "care_contacts")
    good = good.select(strip(F.col("customer_id")).alias("customer_id"), F.col("_at").alias("contacted_at"), "topic")
    return good, bad
