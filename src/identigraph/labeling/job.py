"""The labeling job: graph snapshot → ``labels.csv`` + ``report.json``, on Spark like the historical load.

::

    identigraph label --snapshot SNAP --out LABELS [--as-of TS] [--labeling-config FILE] [--truth truth.csv]

One row per customer that existed at as-of: ``customer_id`` (raw id), ``label`` (1 fraud, 0 legitimate,
empty = unknown), ``status``, ``evidence`` (JSON: the block and care facts that decided the status, and for a
correction the status it came from and every rule that fired with the identifiers involved — emails and
phones appear only as the snapshot's keyed hashes), ``label_as_of``. Locally the output is staged in a
sibling directory and renamed into place, so a failed run leaves the previous labels (or nothing); on an
object store (``s3://``, ``s3a://``) it is written under ``OUT/_staging-*`` and moved into place,
``report.json`` last.

``--snapshot`` is a snapshot location (its published run, through ``LATEST``) or any folder of Gremlin
CSV with the history tables; every path is a URI read through Hadoop's filesystem API.

As-of defaults to the snapshot's own; a later one is refused, because what happened after the snapshot
is not in it and labels would silently claim a maturity they do not have. An earlier one is how labels
for a past training cut are rebuilt from today's snapshot: every fact is cut at as-of
(``maturity``/``rules``), and the leakage test proves the result equals a snapshot taken then.
"""

from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType
from rich.console import Console

from identigraph.config_loader import LABELING, config_path
from identigraph.errors import SchemaError
from identigraph.etl import fs as fsys
from identigraph.etl import snapshot
from identigraph.etl.spark import write_csv
from identigraph.etl.transforms import raw_id
from identigraph.graph import schema
from identigraph.labeling import verdicts as reviewed
from identigraph.labeling.config import (
    FRAUD_STATUSES,
    LEGIT_STATUSES,
    STATUSES,
    LabelingConfig,
    load_labeling_config,
)
from identigraph.labeling.maturity import label_of, statuses
from identigraph.labeling.rules import corrections
from identigraph.timestamps import parse_field

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
REPORT_FILE = "report.json"
LABEL_COLUMNS = ("customer_id", "label", "status", "evidence", "label_as_of")
_ERR = "identigraph-labeling: "  # marks our own raise_error messages inside Spark's exception text

BLOCK_COLUMNS = {"customer_id": "String", "blocked_at": "Date", "reason": "String", "source": "String",
                 "rule_name": "String", "unblocked_at": "Date"}
CARE_COLUMNS = {"customer_id": "String", "contacted_at": "Date", "topic": "String"}
TRUTH_COLUMNS = {"customer_id": "String", "is_fraud": "Int", "fraud_type": "String"}


# ---- reading ----------------------------------------------------------------------------------------------

def _header(fs: fsys.FS, uri: str) -> list[str]:
    return next(csv.reader([fsys.first_line(fs, uri)]), [])


def read_csv(spark: SparkSession, files: list[str] | list[Path], wanted: dict[str, str], what: str) -> DataFrame:
    """The ``wanted`` columns (name → Neptune type) of CSV files that share a header, typed; Neptune
    ``name:Type`` headers and plain ones both work. No files: an empty frame of the same shape."""
    spark_type = {"Date": "timestamp", "String": "string", "Int": "int", "Long": "bigint", "Double": "double"}
    if not files:
        return spark.createDataFrame([], ", ".join(f"`{c}` {spark_type[t]}" for c, t in wanted.items()))
    fs = fsys.HadoopFS(spark)
    files = [fsys.normalise(f) for f in files]
    header = _header(fs, files[0])
    for f in files[1:]:
        if _header(fs, f) != header:
            raise SchemaError(f"{what}: {f.rsplit('/', 1)[-1]} has another header than {files[0].rsplit('/', 1)[-1]}")
    names = [name for name, _ in snapshot.split_header(header)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise SchemaError(f"{what}: no column {', '.join(missing)} in {files[0]}")
    # every column as text in the file's own order, then typed here: a bad value fails the job by name
    text = StructType([StructField(f"_c{i}", StringType()) for i in range(len(header))])
    raw = (spark.read.schema(text).option("header", True).option("escape", '"').option("mode", "FAILFAST")
           .csv([str(f) for f in files]))
    cols = []
    for name, typ in wanted.items():
        value = F.col(f"_c{names.index(name)}")
        value = F.when(value != "", value)
        if typ != "String":
            parsed = F.expr(f"try_cast(`_c{names.index(name)}` as {spark_type[typ]})")
            value = F.when(value.isNotNull() & parsed.isNull(),
                           F.raise_error(F.lit(f"{_ERR}{what}: a {name} is not a valid {typ}"))).otherwise(parsed)
        cols.append(value.cast(spark_type[typ]).alias(name))
    return raw.select(*cols)


def _history_files(fs: fsys.FS, prefix: str, table: str) -> list[str]:
    return [e.uri for e in fs.list(fsys.join(prefix, "history", table))
            if not e.is_dir and e.name.endswith(".csv") and not e.name.startswith(("_", "."))]


def _union(frames: list[DataFrame], empty: DataFrame) -> DataFrame:
    out = frames[0] if frames else empty
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def read_snapshot(spark: SparkSession, snap: str | Path) -> dict[str, DataFrame]:
    """``customers`` (customer_id, created_at), ``edges`` (customer_id, id_type, identifier, first_seen),
    ``blocks``, ``care``: uncut — the labeling functions cut everything at as-of themselves.

    Vertex and edge files are found by their headers and labels (``snapshot.graph_files``), whatever the
    folder layout."""
    fs = fsys.HadoopFS(spark)
    prefix = snapshot.resolve(fs, snap).prefix
    shapes: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for f in snapshot.graph_files(fs, prefix):
        shapes.setdefault((f.kind, f.header), []).append(f.uri)
    customers_parts, edge_parts = [], []
    for (kind, header), files in sorted(shapes.items()):
        names = [n for n, _ in snapshot.split_header(list(header))]
        if kind == "vertices" and "created_at" in names and "~label" in names:
            v = read_csv(spark, files, {"~id": "String", "~label": "String", "created_at": "Date"}, "vertices")
            customers_parts.append(v.filter(F.col("~label") == schema.CUSTOMER).select(
                raw_id("~id", schema.CUSTOMER).alias("customer_id"), "created_at"))
        elif kind == "edges" and {"~label", "first_seen"} <= set(names):
            e = read_csv(spark, files, {"~from": "String", "~to": "String", "~label": "String",
                                        "first_seen": "Date"}, "edges")
            id_type = F.element_at(F.create_map(*[F.lit(x) for kv in schema.EDGE_TO_IDENTIFIER.items() for x in kv]),
                                   F.col("~label"))
            # not a customer→identifier edge (a future captain edge, say): not a labeling fact
            edge_parts.append(e.filter(F.col("~from").startswith(f"{schema.CUSTOMER}:")
                                       & F.col("~label").isin(list(schema.EDGE_TO_IDENTIFIER))).select(
                raw_id("~from", schema.CUSTOMER).alias("customer_id"), id_type.alias("id_type"),
                F.col("~to").alias("identifier"), "first_seen"))
    customers = _union(customers_parts, spark.createDataFrame([], "customer_id string, created_at timestamp"))
    edges = _union(edge_parts, spark.createDataFrame(
        [], "customer_id string, id_type string, identifier string, first_seen timestamp"))
    blocks = read_csv(spark, _history_files(fs, prefix, "blocks"), BLOCK_COLUMNS, "history/blocks")
    care = read_csv(spark, _history_files(fs, prefix, "care_contacts"), CARE_COLUMNS, "history/care_contacts")
    return {"customers": customers, "edges": edges, "blocks": blocks, "care": care}


def snapshot_as_of(snap: str | Path, fs: fsys.FS | None = None) -> datetime | None:
    """The as-of a snapshot was cut at (its manifest, else its summary), or None for anyone's CSV."""
    fs = fs or fsys.LocalFS()
    resolved = snapshot.resolve(fs, snap)
    if resolved.manifest is not None:
        return parse_field(resolved.manifest["as_of"], "as_of")
    path = fsys.join(resolved.prefix, snapshot.SUMMARY)
    if not fs.exists(path):
        return None
    try:
        return parse_field(json.loads(fsys.read_text(fs, path))["as_of"], "as_of")
    except (ValueError, KeyError, TypeError):
        raise SchemaError(f"snapshot: {path} has no readable as_of") from None


# ---- the job ----------------------------------------------------------------------------------------------

def label_frame(facts: dict[str, DataFrame], as_of: datetime, cfg: LabelingConfig,
                verdicts: DataFrame | None = None) -> DataFrame:
    """Maturity, then one pass of corrections, then reviewers' verdicts over both (``labeling.verdicts``):
    ``customer_id, status_before, status, label_before, label, rules, verdict, evidence`` — the whole job
    without I/O, for tests and callers that keep the frame."""
    ts = F.lit(as_of).cast("timestamp")
    edges = facts["edges"].filter(F.col("first_seen") <= ts)
    # cached: the corrections and the output both read the statuses (the caller clears the cache)
    mature = statuses(facts["customers"], edges, facts["blocks"], facts["care"], as_of, cfg.maturity).persist()
    fixed = corrections(edges, mature, cfg)
    out = mature.join(fixed, "customer_id", "left")
    if verdicts is None:
        verdicts = facts["customers"].sparkSession.createDataFrame([], reviewed.SCHEMA)
    out = out.join(verdicts, "customer_id", "left")
    corrected = F.when(F.col("rules").isNotNull(), F.lit("corrected_fraud")).otherwise(F.col("status"))
    status = reviewed.overridden(corrected)
    evidence = F.struct(
        "maturity.created", "maturity.block", "maturity.ever_contested", "maturity.ever_lifted",
        F.when(F.col("rules").isNotNull(), F.col("status")).alias("corrected_from"), "rules",
        reviewed.review_evidence())
    return out.select(
        "customer_id", F.col("status").alias("status_before"), status.alias("status"),
        F.col("label").alias("label_before"), label_of(status).alias("label"), "rules", "verdict",
        F.to_json(evidence, {"timestampFormat": snapshot.TS_FORMAT_SPARK}).alias("evidence"),
    )


def _check_paths(snap: str | Path, out: str | Path, overwrite: bool, fs: fsys.FS | None = None) -> None:
    fs = fs or fsys.LocalFS()
    s, o = fsys.normalise(snap), fsys.normalise(out)
    prefix = snapshot.resolve(fs, s).prefix
    if not fs.is_dir(fsys.join(prefix, "vertices")) and not fs.is_dir(fsys.join(prefix, "edges")) \
            and not snapshot.graph_files(fs, prefix):
        raise SchemaError(f"snapshot: {snap} is not a graph snapshot (no vertices/ or edges/)")
    if o == s or o.startswith(s + "/") or s.startswith(o + "/"):
        raise SchemaError(f"out: {out} must not be the snapshot, inside it or around it")
    if fs.exists(o) and (not fs.is_dir(o) or fs.list(o)) and not overwrite:
        raise SchemaError(f"out: {out} exists and is not empty (use --overwrite)")


def resolve_as_of(snap: str | Path, as_of: str | datetime | None, fs: fsys.FS | None = None) -> datetime:
    """The labels' as-of: the one asked for, which may not be after the snapshot's, else the snapshot's."""
    snap_as_of = snapshot_as_of(snap, fs)
    wanted = parse_field(as_of, "as_of")
    if wanted is None:
        if snap_as_of is None:
            raise SchemaError(f"as_of: {snap} has no {snapshot.SUMMARY} to take it from; pass --as-of")
        return snap_as_of
    if snap_as_of is not None and wanted > snap_as_of:
        raise SchemaError(f"as_of: {snapshot.format_ts(wanted)} is later than the snapshot's as-of "
                          f"{snapshot.format_ts(snap_as_of)}; what happened after it is not in the snapshot")
    return wanted


@contextmanager
def _staged_output(fs: fsys.FS, out: str) -> Iterator[str]:
    """Locally: ``snapshot.staged`` (rename into place). Object stores have no directory rename: the files
    are written under a staging prefix, then moved into ``out`` one by one, ``report.json`` last."""
    if fsys.is_local(out):
        with snapshot.staged(fsys.local_path(out), overwrite=True) as local_tmp:
            yield str(local_tmp)
        return
    tmp = fsys.join(out, f"_staging-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        for name in (LABELS_FILE, REPORT_FILE):
            fs.rename(fsys.join(tmp, name), fsys.join(out, name))
    finally:
        fs.delete(tmp)


def run_labeling(
    spark: SparkSession,
    snap: str | Path,
    out: str | Path,
    as_of: str | datetime | None = None,
    config: LabelingConfig | str | Path | None = None,
    truth: str | Path | None = None,
    overwrite: bool = False,
    verdicts: Path | None = None,
) -> dict[str, Any]:
    """Write ``labels.csv`` and ``report.json`` under ``out``; returns the report. ``verdicts``: the review
    console's store, whose verdicts override maturity and correction (``labeling.verdicts``)."""
    fs = fsys.HadoopFS(spark)
    snap, out = fsys.normalise(snap), fsys.normalise(out)
    cfg = config if isinstance(config, LabelingConfig) else load_labeling_config(config)
    _check_paths(snap, out, overwrite, fs)
    if truth is not None and (not fs.exists(fsys.normalise(truth)) or fs.is_dir(fsys.normalise(truth))):
        raise SchemaError(f"truth: {truth} is not a file")
    cut = resolve_as_of(snap, as_of, fs)
    started = time.perf_counter()
    try:
        with _staged_output(fs, out) as tmp:
            given = reviewed.verdict_frame(spark, Path(verdicts), cut) if verdicts is not None else None
            frame = label_frame(read_snapshot(spark, snap), cut, cfg, given).persist()
            _write_labels(fs, frame, cut, tmp)
            report = build_report(spark, frame, cfg, truth)
            report = {"as_of": snapshot.format_ts(cut), "snapshot": snap, "config": _config_name(config),
                      "verdicts_from": str(verdicts) if verdicts is not None else None,
                      "maturity": cfg.maturity.model_dump(), **report,
                      "seconds": round(time.perf_counter() - started, 2)}
            fs.write_bytes(fsys.join(tmp, REPORT_FILE), (json.dumps(report, indent=2) + "\n").encode())
        log.info("✓ %s customers labelled as of %s (%.1fs)", f"{report['customers']:,}", report["as_of"],
                 report["seconds"])
        return report
    except Exception as exc:
        text = str(exc)
        if _ERR in text:  # our own check failing inside a Spark task: keep its sentence, drop the JVM trace
            raise SchemaError(text[text.index(_ERR) + len(_ERR):].splitlines()[0].strip().rstrip('".')) from None
        if "Malformed records are detected" in text:  # FAILFAST: a line whose fields do not fit the header
            raise SchemaError(f"snapshot: {snap} has a malformed CSV line "
                              "(its fields do not match the header)") from None
        raise
    finally:
        spark.catalog.clearCache()


def _config_name(config: LabelingConfig | str | Path | None) -> str:
    if isinstance(config, LabelingConfig):
        return "<in memory>"
    return str(config_path(LABELING, config))


def _write_labels(fs: fsys.FS, frame: DataFrame, cut: datetime, tmp: str) -> None:
    rows = frame.select(
        "customer_id", F.col("label").cast("string").alias("label"), "status", "evidence",
        F.lit(snapshot.format_ts(cut)).alias("label_as_of"),
    ).repartition(1).sortWithinPartitions("customer_id")
    parts_dir = fsys.join(tmp, "_labels")
    write_csv(rows, parts_dir, 1)
    part = next((e for e in fs.list(parts_dir) if e.name.startswith("part-") and e.name.endswith(".csv")), None)
    if part is None or part.size == 0:  # no customers at as-of: still a file with its header
        fs.write_bytes(fsys.join(tmp, LABELS_FILE), (",".join(LABEL_COLUMNS) + "\n").encode())
    else:
        fs.rename(part.uri, fsys.join(tmp, LABELS_FILE))
    fs.delete(parts_dir)


# ---- report -----------------------------------------------------------------------------------------------

def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def build_report(spark: SparkSession, frame: DataFrame, cfg: LabelingConfig,
                 truth: str | Path | None) -> dict[str, Any]:
    """Counts per status and rule; with the truth, precision and recall before and after correction."""
    df = frame
    if truth is not None:
        t = read_csv(spark, [str(truth)], TRUTH_COLUMNS, "truth").dropDuplicates(["customer_id"])
        df = frame.join(t, "customer_id", "left")
    else:
        df = frame.withColumn("is_fraud", F.lit(None).cast("int")).withColumn("fraud_type", F.lit(None).cast("string"))
    # one small aggregate answers every question below (one pass, however many customers)
    cells = [r.asDict() for r in df.groupBy("status_before", "status", "is_fraud", "fraud_type",
                                            F.col("rules.rule").alias("fired"), "verdict").count().collect()]

    def total(pred: Any) -> int:
        return sum(c["count"] for c in cells if pred(c))

    report: dict[str, Any] = {
        "customers": total(lambda c: True),
        "statuses": {s: total(lambda c, s=s: c["status"] == s) for s in STATUSES},
        "statuses_before_correction": {s: total(lambda c, s=s: c["status_before"] == s) for s in STATUSES},
        "labels": {"fraud": total(lambda c: c["status"] in FRAUD_STATUSES),
                   "legit": total(lambda c: c["status"] in LEGIT_STATUSES)},
        "rules": {},
    }
    report["labels"]["unknown"] = report["customers"] - report["labels"]["fraud"] - report["labels"]["legit"]
    # what the reviewers' verdicts did: how many, and how many of them changed the label a rule or maturity gave
    corrected_or_mature = lambda c: "corrected_fraud" if c["fired"] else c["status_before"]  # noqa: E731
    report["verdicts"] = {
        "confirm_fraud": total(lambda c: c["verdict"] == "confirm_fraud"),
        "legitimate": total(lambda c: c["verdict"] == "legitimate"),
        "changed_status": total(lambda c: c["verdict"] is not None and c["status"] != corrected_or_mature(c)),
        "legit_over_rule": total(lambda c: c["verdict"] == "legitimate" and bool(c["fired"])),
        "fraud_over_legit": total(lambda c: c["verdict"] == "confirm_fraud"
                                  and corrected_or_mature(c) in LEGIT_STATUSES),
    }
    for rule in cfg.rules:
        mine = [c for c in cells if rule.name in (c["fired"] or ())]
        entry: dict[str, Any] = {
            "confidence": rule.confidence, "fired": sum(c["count"] for c in mine),
            "only_rule": sum(c["count"] for c in mine if len(c["fired"]) == 1),
            "from": {s: n for s in STATUSES if (n := sum(c["count"] for c in mine if c["status_before"] == s))},
        }
        if truth is not None:
            tp = sum(c["count"] for c in mine if c["is_fraud"] == 1)
            known = sum(c["count"] for c in mine if c["is_fraud"] is not None)
            entry.update(true_fraud=tp, precision=_ratio(tp, known))
        report["rules"][rule.name] = entry
    if truth is not None:
        report["truth"] = _truth_metrics(cells)
    return report


def _truth_metrics(cells: list[dict[str, Any]]) -> dict[str, Any]:
    known = [c for c in cells if c["is_fraud"] is not None]

    def n(pred: Any) -> int:
        return sum(c["count"] for c in known if pred(c))

    frauds = n(lambda c: c["is_fraud"] == 1)

    def fraud_labels(col: str) -> dict[str, Any]:
        labelled = n(lambda c: c[col] in FRAUD_STATUSES)
        tp = n(lambda c: c[col] in FRAUD_STATUSES and c["is_fraud"] == 1)
        legit = n(lambda c: c[col] in LEGIT_STATUSES)
        hidden = n(lambda c: c[col] in LEGIT_STATUSES and c["is_fraud"] == 1)
        return {"fraud_labels": labelled, "true_fraud": tp, "precision": _ratio(tp, labelled),
                "recall": _ratio(tp, frauds), "legit_labels": legit, "fraud_among_legit_labels": hidden,
                "legit_precision": _ratio(legit - hidden, legit)}

    before, after = fraud_labels("status_before"), fraud_labels("status")
    promoted = n(lambda c: c["status"] == "corrected_fraud")
    added = n(lambda c: c["status"] == "corrected_fraud" and c["is_fraud"] == 1)
    types = sorted({c["fraud_type"] for c in known if c["is_fraud"] == 1 and c["fraud_type"]})
    per_type = {}
    for ft in types:
        members = n(lambda c, ft=ft: c["fraud_type"] == ft and c["is_fraud"] == 1)
        per_type[ft] = {
            "customers": members,
            "recall_before": _ratio(n(lambda c, ft=ft: c["fraud_type"] == ft and c["is_fraud"] == 1
                                      and c["status_before"] == "matured_fraud"), members),
            "recall_after": _ratio(n(lambda c, ft=ft: c["fraud_type"] == ft and c["is_fraud"] == 1
                                     and c["status"] in FRAUD_STATUSES), members),
            "labelled_legit_after": n(lambda c, ft=ft: c["fraud_type"] == ft and c["is_fraud"] == 1
                                      and c["status"] in LEGIT_STATUSES),
        }
    return {
        "customers_in_truth": n(lambda c: True),
        "customers_not_in_truth": sum(c["count"] for c in cells) - n(lambda c: True),
        "fraud_customers": frauds,
        "before_correction": before,
        "after_correction": after,
        "corrections": {"promoted": promoted, "true_fraud_added": added, "precision": _ratio(added, promoted),
                        "gain_over_matured": _ratio(added, before["true_fraud"])},
        "per_fraud_type": per_type,
    }


def run_job(settings: Any, snap: str | Path, out: str | Path, as_of: str | None = None, config: Path | None = None,
            truth: str | Path | None = None, overwrite: bool = False, console: Console | None = None,
            summary_console: Console | None = None, verdicts: Path | None = None) -> dict[str, Any]:
    """What ``identigraph label`` runs: a Spark session, the job, the summary (to ``summary_console``, else
    ``console``; printed only when one is given)."""
    from identigraph.etl.spark import session
    from identigraph.labeling.report import print_report

    # every check that needs no data first: a typo should not cost a Spark start-up
    load_labeling_config(config)
    if fsys.is_local(snap) and fsys.is_local(out):
        _check_paths(snap, out, overwrite)
        resolve_as_of(snap, as_of)
    report = run_labeling(session(settings, app_name="identigraph-label"), snap, out, as_of=as_of, config=config,
                          truth=truth, overwrite=overwrite, verdicts=verdicts)
    if summary_console or console:
        print_report(report, summary_console or console)  # type: ignore[arg-type]  # one of them is set
    return report
