"""The job summary a person reads at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The snapshot summary as one table a person reads after ``identigraph etl``."""
    table = Table(title=f"snapshot as of {summary['as_of']}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, n in summary["rows_read"].items():
        table.add_row(f"rows read: {name}", f"{n:,}")
    for reason, n in summary["quarantined"].items():
        table.add_row(f"[yellow]quarantined[/] {reason}", f"{n:,}")
    table.add_row("events after as-of (not loaded)", f"{summary['events_after_as_of']:,}")
    for label, n in summary["vertices"].items():
        table.add_row(f"vertices: {label}", f"{n:,}")
    for label, n in summary["edges"].items():
        table.add_row(f"edges: {label}", f"{n:,}")
    table.add_row("seconds", f"{summary['seconds']['total']:.1f}")
    console.print(table)
