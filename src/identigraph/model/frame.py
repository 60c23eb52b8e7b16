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

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from identigraph.errors import SchemaError
from identigraph.etl import snapshot as snap

Relation = tuple[str, str, str]
NUMERIC = ("Int", "Long", "Short", "Byte", "Double", "Float")


@dataclass
class GraphFrame:
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


def _read_parts(folder: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every CSV part in ``folder`` with its typed columns; parts must agree on the header."""
    frames, header = [], None
    for path in snap.csv_files(folder):
        part = pd.read_csv(path, dtype=str, keep_default_na=False)
        if header is None:
            header = list(part.columns)
        elif list(part.columns) != header:
            raise SchemaError(f"{path}: header differs from the other parts of {folder}")
        frames.append(part)
    if header is None:
        return pd.DataFrame(), {}
    raw = pd.concat(frames, ignore_index=True)
    columns = snap.split_header(header)
    raw.columns = [name for name, _ in columns]
    return raw, {name: typ for name, typ in columns if typ != "System"}


def read_snapshot(path: Path) -> GraphFrame:
    """A snapshot directory (the ETL's or anyone's Neptune Gremlin CSV) as a GraphFrame."""
    path = Path(path)
    summary_path = path / snap.SUMMARY
    if not (path / "vertices").is_dir():
        raise SchemaError(f"{path} is not a snapshot: vertices/ is missing")
    as_of = datetime.now(timezone.utc)
    if summary_path.exists():
        as_of_raw = json.loads(summary_path.read_text()).get("as_of")
        if as_of_raw:
            as_of = datetime.fromisoformat(as_of_raw.replace("Z", "+00:00"))
    vertices: dict[str, pd.DataFrame] = {}
    types: dict[str, dict[str, str]] = {}
    label_of: dict[str, pd.Series] = {}
    for label in snap.labels(path, "vertices"):
        raw, t = _read_parts(path / "vertices" / label)
        if raw.empty:
            continue
        if raw["~id"].duplicated().any():
            raise SchemaError(f"vertices/{label}: duplicate ~id {raw['~id'][raw['~id'].duplicated()].iloc[0]!r}")
        raw = raw.set_index("~id")
        vertices[label] = _typed(raw, t)
        types[label] = t
        label_of[label] = pd.Series(label, index=raw.index)
    id_label = pd.concat(label_of.values()) if label_of else pd.Series(dtype=object)
    edges: dict[Relation, pd.DataFrame] = {}
    for elabel in snap.labels(path, "edges"):
        raw, t = _read_parts(path / "edges" / elabel)
        if raw.empty:
            continue
        src_label = raw["~from"].map(id_label)
        dst_label = raw["~to"].map(id_label)
        dangling = src_label.isna() | dst_label.isna()
        if dangling.any():
            bad = raw.loc[dangling, "~id"].iloc[0]
            raise SchemaError(f"edges/{elabel}: {int(dangling.sum())} edges point at unknown vertices (first: {bad})")
        typed = _typed(raw, t)
        typed.insert(0, "src", raw["~from"].to_numpy())
        typed.insert(1, "dst", raw["~to"].to_numpy())
        for (sl, dl), idx in typed.groupby([src_label, dst_label]).groups.items():
            edges[(sl, elabel, dl)] = typed.loc[idx].reset_index(drop=True)
        types[elabel] = t
    return GraphFrame(as_of=as_of, vertices=vertices, edges=edges, types=types)
