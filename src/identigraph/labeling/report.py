"""The tables a person reads after ``identigraph label``: the CLI layer's rendering of the job's report
(the job itself only logs progress and returns the report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from identigraph.labeling.config import FRAUD_STATUSES, LEGIT_STATUSES, STATUSES


def print_report(report: dict[str, Any], console: Console) -> None:
    """The summary a person reads at the end of a run."""
    table = Table(title=f"labels as of {report['as_of']}: {report['customers']:,} customers")
    for col, justify in (("status", "left"), ("label", "center"), ("customers", "right"),
                         ("before correction", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in STATUSES:
        n, before = report["statuses"][s], report["statuses_before_correction"][s]
        if n or before:
            label = "1" if s in FRAUD_STATUSES else "0" if s in LEGIT_STATUSES else "-"
            table.add_row(s, label, f"{n:,}", f"{before:,}")
    console.print(table)
    has_truth = "truth" in report
    rules = Table(title="correction rules (one pass, against matured fraud only)")
    for col in ("rule", "conf.", "fired", "alone", *(("true fraud", "precision") if has_truth else ())):
        rules.add_column(col, justify="left" if col == "rule" else "right")
    for name, r in report["rules"].items():
        row = [name, f"{r['confidence']:.2f}", f"{r['fired']:,}", f"{r['only_rule']:,}"]
        if has_truth:
            row += [f"{r['true_fraud']:,}", _fmt(r["precision"])]
        rules.add_row(*row)
    console.print(rules)
    v = report.get("verdicts") or {}
    if v.get("confirm_fraud") or v.get("legitimate"):
        console.print(f"  reviewers' verdicts: {v['confirm_fraud']:,} fraud, {v['legitimate']:,} legitimate; "
                      f"{v['changed_status']:,} changed the status a rule or maturity gave "
                      f"({v['legit_over_rule']:,} legitimate over a firing rule)")
    if has_truth:
        _print_truth(report["truth"], console)


def _print_truth(t: dict[str, Any], console: Console) -> None:
    b, a, c = t["before_correction"], t["after_correction"], t["corrections"]
    quality = Table(title=f"against the truth ({t['fraud_customers']:,} fraudsters)")
    for col in ("label 1", "count", "true fraud", "precision", "recall", "fraud in label 0"):
        quality.add_column(col, justify="left" if col == "label 1" else "right")
    for name, x in (("matured", b), ("final", a)):
        quality.add_row(name, f"{x['fraud_labels']:,}", f"{x['true_fraud']:,}", _fmt(x["precision"]),
                        _fmt(x["recall"]), f"{x['fraud_among_legit_labels']:,}/{x['legit_labels']:,}")
    quality.add_row("corrected", f"{c['promoted']:,}", f"{c['true_fraud_added']:,}", _fmt(c["precision"]), "", "")
    console.print(quality)
    console.print(f"  corrections add {c['true_fraud_added']:,} true-fraud labels "
                  f"(+{_fmt(c['gain_over_matured'], pct=True)} over matured) at precision {_fmt(c['precision'])}")
    kinds = Table(title="fraud recall by kind")
    for col in ("kind", "customers", "recall before", "after", "left in label 0"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for ft, x in t["per_fraud_type"].items():
        kinds.add_row(ft, f"{x['customers']:,}", _fmt(x["recall_before"]), _fmt(x["recall_after"]),
                      f"{x['labelled_legit_after']:,}")
    console.print(kinds)


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.3f}"
