"""One in-memory form of a property graph for training, batch scoring and the API.

Training, evaluation and batch scoring read a whole snapshot as a ``GraphFrame``. The API reads one
customer's receptive field from Gremlin into a ``request_path.RequestGraph`` instead, and the tests hold
its encoder to this one's numbers (train/serve skew is the classic way a fraud model fails silently).

Vertices are grouped by label, edges by (source label, edge label, target label). Property values are
typed by the snapshot header (``name:Type``): Date → UTC ``datetime64``, numbers → float, Bool → float
0/1, String → object. ``degree`` lets a hand-made frame state an identifier's true degree where it
holds fewer of its edges (snapshots carry it as the identifier's ``n_customers`` statistic).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from identigraph.errors import SchemaError
from identigraph.etl import fs as fsys
from identigraph.etl import snapshot as snap
from identigraph.timestamps import parse_iso

Relation = tuple[str, str, str]
NUMERIC = ("Int", "Long", "Short", "Byte", "Double", "Float")


@dataclass
class GraphFrame:
    """A snapshot in memory as pandas frames by label and relation: the one input the encoder reads."""
    as_of: datetime
    vertices: dict[str, pd.DataFrame]            # label -> frame indexed by vertex id
    edges: dict[Relation, pd.DataFrame]          # relation -> columns src, dst, <edge properties>
    types: dict[str, dict[str, str]] = field(default_factory=dict)  # label or edge label -> column -> type
    degree: dict[str, int] = field(default_factory=dict)            # true degree where the frame is capped

    def vertex_label(self, vid: str) -> str | None:
        for label, frame in self.vertices.items():
            if vid in frame.index:
                return label
        return None


def _typed(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    out = {}
    for col, typ in types.items():
        raw = frame[col] if col in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        if typ == "Date":
            out[col] = pd.to_datetime(raw.replace("", None), utc=True, errors="coerce", format="ISO8601")
        elif typ in NUMERIC:
            out[col] = pd.to_numeric(raw.replace("", None), errors="coerce").astype(float)
        elif typ == "Bool":
            out[col] = raw.map(lambda v: np.nan if v in (None, "") or (isinstance(v, float) and np.isnan(v))
                               else float(str(v).lower() == "true"))
        else:
            out[col] = raw.where(raw.notna() & (raw != ""), None).astype(object)
    return pd.DataFrame(out, index=frame.index)


def _read_file(fs: Any, uri: str) -> pd.DataFrame:
    source: Any = fsys.local_path(uri) if fsys.is_local(uri) else io.BytesIO(fs.read_bytes(uri))
    return pd.read_csv(source, dtype=str, keep_default_na=False,
                       compression="gzip" if uri.endswith(".gz") else None)


def _read_kind(fs: Any, files: list[Any], default_label: str) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Rows of every file of one kind grouped by ``~label`` (Neptune's default label when a file has no
    such column), each file typed by its own header; a column must have one type per label. In a file
    that mixes labels, a label keeps only the columns its rows fill."""
    frames: dict[str, list[pd.DataFrame]] = {}
    types: dict[str, dict[str, str]] = {}
    for f in files:
        part = _read_file(fs, f.uri)
        columns = snap.split_header(list(part.columns))
        part.columns = [name for name, _ in columns]
        if "~label" not in part.columns:
            part["~label"] = default_label
        mixed = part["~label"].nunique() > 1
        for label, rows in part.groupby("~label", sort=False):
            t = types.setdefault(str(label), {})
            for name, typ in columns:
                if typ == "System":
                    continue
                if mixed and not (rows[name] != "").any():
                    # one file, several labels: an empty cell is "no such property" (Neptune's reading),
                    # so a column no row of this label fills is another label's
                    rows = rows.drop(columns=name)
                    continue
                if t.setdefault(name, typ) != typ:
                    raise SchemaError(f"{f.uri}: {label}.{name} is {typ} here but {t[name]} in another file")
            frames.setdefault(str(label), []).append(rows)
    return {label: pd.concat(parts, ignore_index=True) for label, parts in frames.items()}, types


def read_snapshot(path: str | Path, fs: Any = None) -> GraphFrame:
    """Any Gremlin CSV as a GraphFrame: a snapshot location (its published run), a run, or anyone's folder
    of Neptune bulk-load files in any layout (ours, one ``vertices/nodes.csv`` with ``~label``, Neptune's
    export) — files are told apart and typed by their headers. Local paths or ``s3://`` URIs."""
    fs = fs or fsys.PyFS()
    resolved = snap.resolve(fs, path)
    files = snap.graph_files(fs, resolved.prefix)
    if not any(f.kind == "vertices" for f in files):
        raise SchemaError(f"{path} is not a snapshot: no vertex files (Gremlin CSV with ~id and no ~from)")
    as_of = datetime.now(timezone.utc)
    as_of_raw = (resolved.manifest or {}).get("as_of")
    summary_uri = fsys.join(resolved.prefix, snap.SUMMARY)
    if as_of_raw is None and fs.exists(summary_uri):
        as_of_raw = json.loads(fsys.read_text(fs, summary_uri)).get("as_of")
    if as_of_raw:
        as_of = parse_iso(as_of_raw, to_utc=False)
    vertices: dict[str, pd.DataFrame] = {}
    types: dict[str, dict[str, str]] = {}
    label_of: dict[str, pd.Series] = {}
    raw_vertices, vertex_types = _read_kind(fs, [f for f in files if f.kind == "vertices"], "vertex")
    for label, raw in sorted(raw_vertices.items()):
        if raw.empty:
            continue
        if raw["~id"].duplicated().any():
            raise SchemaError(f"vertices/{label}: duplicate ~id {raw['~id'][raw['~id'].duplicated()].iloc[0]!r}")
        raw = raw.set_index("~id")
        vertices[label] = _typed(raw, vertex_types[label])
        types[label] = vertex_types[label]
        label_of[label] = pd.Series(label, index=raw.index)
    id_label = pd.concat(label_of.values()) if label_of else pd.Series(dtype=object)
    if id_label.index.duplicated().any():
        raise SchemaError(f"vertex {id_label.index[id_label.index.duplicated()][0]!r} has two labels")
    edges: dict[Relation, pd.DataFrame] = {}
    raw_edges, edge_types = _read_kind(fs, [f for f in files if f.kind == "edges"], "edge")
    for elabel, raw in sorted(raw_edges.items()):
        if raw.empty:
            continue
        t = edge_types[elabel]
        src_label = raw["~from"].map(id_label)
        dst_label = raw["~to"].map(id_label)
        dangling = src_label.isna() | dst_label.isna()
        if dangling.any():
            bad = raw.loc[dangling, "~id"].iloc[0] if "~id" in raw else raw.loc[dangling, "~from"].iloc[0]
            raise SchemaError(f"edges/{elabel}: {int(dangling.sum())} edges point at unknown vertices (first: {bad})")
        typed = _typed(raw, t)
        typed.insert(0, "src", raw["~from"].to_numpy())
        typed.insert(1, "dst", raw["~to"].to_numpy())
        for (sl, dl), idx in typed.groupby([src_label, dst_label]).groups.items():
            edges[(sl, elabel, dl)] = typed.loc[idx].reset_index(drop=True)
        types[elabel] = t
    return GraphFrame(as_of=as_of, vertices=vertices, edges=edges, types=types)
