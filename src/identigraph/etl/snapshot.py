"""The graph snapshot: Amazon Neptune's Gremlin bulk-load CSV, one format for three uses.

Neptune's bulk loader reads it as it is, the model trains from it, and anyone can bring their own graph
in it. Layout::

    SNAPSHOT/vertices/<label>/part-*.csv     ~id,~label,<name>:<Type>,...
    SNAPSHOT/edges/<label>/part-*.csv        ~id,~from,~to,~label,<name>:<Type>,...
    SNAPSHOT/history/blocks/part-*.csv       raw block history known at as-of (input-contract columns)
    SNAPSHOT/history/care_contacts/part-*.csv
    SNAPSHOT/_quarantine/<table>/            rows that broke the contract, with the reason
    SNAPSHOT/_summary.json                   as-of, counts, quarantine by reason, durations

CSV is RFC-4180: fields quoted with ``"`` and embedded quotes doubled (not Spark's default backslash).
Timestamps are ISO-8601 UTC with milliseconds (``2026-06-30T08:15:00.000Z``); empty means no value.

The history tables carry what the labeling job needs (every block with reason, source and lifting, every
care contact) at full fidelity; the customer vertices carry a summary of the same facts at as-of
(``blocked``, ``n_blocks``, ``last_block_*``, ``n_block_reviews``, …) for scoring and explanations.

Versioned publishing (what the ETL writes)::

    ROOT/LATEST                              {"run": ID, "prefix": "runs/ID"}: the one published run
    ROOT/runs/ID/...                         one run, laid out as above, plus
    ROOT/runs/ID/_manifest.json              files (with sizes), counts, as-of, watermark, parent run
    ROOT/_state/events/ID/                   event ids the run added (Parquet; incremental de-duplication)

A run writes its own prefix, then its manifest, then ``LATEST`` (one small object: a single PUT on S3, an
``os.replace`` locally). A run that dies before the last step leaves ``LATEST`` and the manifest it names
untouched, so readers and ``neptune-load`` never see half a run. Readers ``resolve`` a location: a root
with ``LATEST`` gives its run; anything else is read as it is (anyone's Gremlin CSV).
"""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from identigraph.errors import SchemaError
from identigraph.etl import fs as fsys
from identigraph.graph import schema
from identigraph.timestamps import as_utc, parse_iso

TS_FORMAT_SPARK = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"

CUSTOMER_COLUMNS = schema.CUSTOMER_PROPERTY_TYPES  # name -> Neptune type, in header order
IDENTIFIER_COLUMNS = schema.IDENTIFIER_PROPERTY_TYPES
EDGE_COLUMNS: dict[str, str] = {
    "first_seen": "Date",
    "last_seen": "Date",
    **{name: "Long" for name in schema.EDGE_COUNT_PROPS},
}
SUMMARY = "_summary.json"
MANIFEST = "_manifest.json"
LATEST = "LATEST"
RUNS = "runs"
STATE = "_state"
LEGACY = ("vertices", "edges", "history", "_quarantine", SUMMARY)  # an unversioned snapshot's entries


def vertex_header(label: str) -> list[str]:
    """Neptune's typed header for a vertex label, from the schema, so every writer agrees on column order."""
    cols = schema.vertex_property_types(label)
    return ["~id", "~label", *(f"{k}:{t}" for k, t in cols.items())]


def edge_header() -> list[str]:
    """Neptune's typed header for edges, from the schema, so every writer agrees on column order."""
    return ["~id", "~from", "~to", "~label", *(f"{k}:{t}" for k, t in EDGE_COLUMNS.items())]


def format_ts(value: datetime) -> str:
    """The snapshot's one timestamp format (UTC, milliseconds, ``Z``), which Neptune's loader reads."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_value(raw: str, neptune_type: str, column: str) -> Any:
    """One CSV cell to a Python value; empty is None."""
    if raw == "" or raw is None:
        return None
    try:
        if neptune_type == "Date":
            return parse_iso(raw)
        if neptune_type in ("Int", "Long", "Short", "Byte"):
            return int(raw)
        if neptune_type in ("Double", "Float"):
            return float(raw)
        if neptune_type == "Bool":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
    except ValueError:
        raise SchemaError(f"{column}: {raw!r} is not a valid {neptune_type}") from None
    return raw


def split_header(header: list[str]) -> list[tuple[str, str]]:
    """``name:Type`` → (name, Type); system columns keep their ``~`` name and type ``System``."""
    out = []
    for col in header:
        if col.startswith("~"):
            out.append((col, "System"))
        elif ":" in col:
            name, typ = col.rsplit(":", 1)
            out.append((name, typ.rstrip("[]")))
        else:
            out.append((col, "String"))
    return out


NOT_GRAPH = ("history", "_quarantine", STATE)  # folders of a run that hold no graph elements


@dataclass(frozen=True)
class GraphFile:
    """One Gremlin CSV file: ``kind`` is ``edges`` when its header has ``~from``/``~to``, else
    ``vertices``; ``header`` its raw header."""

    uri: str
    kind: str
    header: tuple[str, ...]


def graph_files(fs: fsys.FS, prefix: str) -> list[GraphFile]:
    """Every Gremlin CSV file under ``prefix``, told apart by its header, whatever the folder layout:
    ours (``vertices/<label>/part-*.csv``), one ``vertices/nodes.csv`` with the label in ``~label``,
    Neptune's export (``nodes/``, ``edges/``) or files side by side. History, quarantine and state
    folders, and ``_``/``.`` files, are not graph files."""
    out = []
    for e in fs.list(prefix, recursive=True):
        rel = fsys.relative(prefix, e.uri)
        parts = rel.split("/")
        if e.is_dir or parts[0] in NOT_GRAPH or any(p.startswith(("_", ".")) for p in parts):
            continue
        if not (e.name.endswith(".csv") or e.name.endswith(".csv.gz")) or e.size == 0:
            continue
        header = tuple(next(csv.reader([fsys.first_line(fs, e.uri)]), []))
        if "~id" not in header and "~from" not in header:
            raise SchemaError(f"{e.uri}: not a Gremlin CSV file (no ~id column in its header)")
        kind = "edges" if "~from" in header and "~to" in header else "vertices"
        out.append(GraphFile(e.uri, kind, header))
    return out


def csv_files(folder: Path) -> list[Path]:
    """The CSV parts of a folder in a stable order; none when the folder is absent."""
    return sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.exists() else []


def iter_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """Rows of every CSV part in ``folder``, typed by their headers (streams: bounded memory)."""
    for path in csv_files(folder):
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                continue
            columns = split_header(header)
            for line in reader:
                yield typed_row(columns, line)


def typed_row(columns: list[tuple[str, str]], values: Any) -> dict[str, Any]:
    """One CSV line as a dict: ``~`` columns as text, the others by their header type."""
    return {name: (value if typ == "System" else parse_value(value or "", typ, name))
            for (name, typ), value in zip(columns, values, strict=False)}


def labels(snapshot: Path, kind: str) -> list[str]:
    """The labels a local snapshot holds under ``vertices``/``edges`` (its folder names)."""
    root = snapshot / kind
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


# ---- versioned runs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resolved:
    """Where a snapshot's files are: ``prefix`` holds vertices/ edges/ …; ``manifest`` is None for a plain
    (unversioned) snapshot."""

    location: str
    prefix: str
    run: str | None = None
    manifest: dict[str, Any] | None = None


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time (the GC and humans rely on it), unique by a random tail."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}"


def resolve(fs: fsys.FS, location: str | Path) -> Resolved:
    """Follow ``LATEST`` where there is one; a run prefix or a plain folder is read as it is."""
    loc = fsys.normalise(location)
    pointer_uri = fsys.join(loc, LATEST)
    if fs.exists(pointer_uri):
        try:
            pointer = json.loads(fsys.read_text(fs, pointer_uri))
            prefix = fsys.join(loc, pointer["prefix"])
            manifest = json.loads(fsys.read_text(fs, fsys.join(prefix, MANIFEST)))
        except (ValueError, KeyError, TypeError) as exc:
            raise SchemaError(f"snapshot: {pointer_uri} does not name a readable run ({exc})") from None
        return Resolved(loc, prefix, pointer["run"], manifest)
    manifest_uri = fsys.join(loc, MANIFEST)
    if fs.exists(manifest_uri):
        manifest = json.loads(fsys.read_text(fs, manifest_uri))
        return Resolved(loc, loc, manifest.get("run"), manifest)
    return Resolved(loc, loc)


def has_content(fs: fsys.FS, location: str) -> bool:
    """Whether a location holds anything, so a full load never overwrites by accident."""
    return bool(fs.list(fsys.normalise(location)))


def run_files(fs: fsys.FS, prefix: str) -> list[dict[str, Any]]:
    """Every file of a run (relative path, bytes), as the manifest records them."""
    return [{"path": fsys.relative(prefix, e.uri), "bytes": e.size}
            for e in fs.list(prefix, recursive=True) if not e.is_dir and e.name != MANIFEST]


def publish(fs: fsys.FS, location: str, run_id: str, manifest: dict[str, Any]) -> None:
    """Manifest, then pointer: the one step that makes a run visible."""
    prefix = fsys.join(location, RUNS, run_id)
    fs.write_bytes(fsys.join(prefix, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
    pointer = {"run": run_id, "prefix": f"{RUNS}/{run_id}", "as_of": manifest.get("as_of"),
               "published_at": format_ts(datetime.now(timezone.utc))}
    fs.write_bytes(fsys.join(location, LATEST), (json.dumps(pointer) + "\n").encode())


def collect_garbage(fs: fsys.FS, location: str, keep: int) -> list[str]:
    """Drop runs older than the ``keep`` newest published ones (and the unfinished runs older than the
    current one, which died), and event-id segments no kept manifest names. Runs newer than ``LATEST``
    may be in progress and are left alone (one writer per location is the rule; this is a safety net)."""
    current = resolve(fs, location)
    if current.run is None:
        return []
    runs = sorted(e.name for e in fs.list(fsys.join(location, RUNS)) if e.is_dir)
    published = [r for r in runs if r <= current.run and fs.exists(fsys.join(location, RUNS, r, MANIFEST))]
    kept = set(published[-keep:]) | {current.run}
    referenced: set[str] = set()
    for r in kept:
        m = current.manifest if r == current.run else json.loads(
            fsys.read_text(fs, fsys.join(location, RUNS, r, MANIFEST)))
        referenced |= set((m or {}).get("state", {}).get("events", []))
    dropped = []
    for r in runs:
        if r not in kept and r < current.run:
            fs.delete(fsys.join(location, RUNS, r))
            dropped.append(r)
    for seg in fs.list(fsys.join(location, STATE, "events")):
        rel = fsys.relative(location, seg.uri)
        if seg.is_dir and rel not in referenced and seg.name < current.run:
            fs.delete(seg.uri)
    return dropped


@contextmanager
def staged(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A sibling temporary directory that replaces ``out`` only when the block completes: a failed run
    leaves the previous snapshot (or nothing), never half of a new one."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SchemaError(f"snapshot: {out} exists and is not empty (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if out.exists():  # two renames, then the delete: never a moment with neither copy on disk
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class CsvPartWriter:
    """RFC-4180 writer of one part file, used by ``graph export`` (Spark writes its own parts)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", newline="")  # noqa: SIM115  # the writer keeps it open across calls; close() closes it
        self._writer = csv.writer(self._fh, quoting=csv.QUOTE_MINIMAL, doublequote=True, lineterminator="\n")
        self._writer.writerow(header)
        self.rows = 0

    def write(self, values: list[Any]) -> None:
        self._writer.writerow(["" if v is None else (format_ts(v) if isinstance(v, datetime) else
                                                     ("true" if v is True else "false" if v is False else v))
                               for v in values])
        self.rows += 1

    def close(self) -> None:
        self._fh.close()
