"""Graph → snapshot (the same Neptune CSV the ETL writes), paging through the server.

Used after streaming updates, to train on what the graph holds now, or to move a graph elsewhere. Memory
stays bounded by the page size: each page is written before the next is fetched. Each page is an id-ordered
scan of its label on the server, so the whole export is O(n²/page); for very large Neptune graphs use
Neptune's own export service, which writes this same format.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gremlin_python.process.traversal import Direction, P, T

from identigraph.etl import snapshot
from identigraph.graph import schema
from identigraph.graph.client import GraphClient


def _pages(client: GraphClient, element: str, label: str, page: int):
    """Key-set paging (id order, strictly after the last id seen): no element is skipped or repeated,
    whatever order the server would otherwise return."""
    last: str | None = None
    while True:
        def build(g, after=last):
            t = (g.V() if element == "V" else g.E()).has_label(label)
            if after is not None:
                t = t.has_id(P.gt(after))
            return t.order().by(T.id).limit(page).element_map()

        rows = client.submit(build)
        if rows:
            yield rows
            last = rows[-1][T.id]
        if len(rows) < page:
            return


def export_snapshot(client: GraphClient, out: Path, page: int = 10_000, overwrite: bool = False) -> dict[str, Any]:
    """Any Gremlin graph back out as a snapshot (Neptune CSV), so a graph built elsewhere trains and loads like ours."""
    counts: dict[str, dict[str, int]] = {"vertices": {}, "edges": {}}
    with snapshot.staged(out, overwrite) as tmp:
        for label in schema.VERTEX_LABELS:
            header = snapshot.vertex_header(label)
            props = [name for name, typ in snapshot.split_header(header) if typ != "System"]
            writer = snapshot.CsvPartWriter(tmp / "vertices" / label / "part-00000.csv", header)
            for rows in _pages(client, "V", label, page):
                for v in rows:
                    writer.write([v[T.id], v[T.label], *(v.get(p) for p in props)])
            writer.close()
            counts["vertices"][label] = writer.rows
        header = snapshot.edge_header()
        for label in schema.EDGE_LABELS:
            writer = snapshot.CsvPartWriter(tmp / "edges" / label / "part-00000.csv", header)
            for rows in _pages(client, "E", label, page):
                for e in rows:
                    writer.write([e[T.id], e[Direction.OUT][T.id], e[Direction.IN][T.id], e[T.label],
                                  *(e.get(p) for p in snapshot.EDGE_COLUMNS)])
            writer.close()
            counts["edges"][label] = writer.rows
        summary = {"as_of": None, "exported_at": snapshot.format_ts(datetime.now(timezone.utc)),
                   "source": client.url, **counts}
        (tmp / snapshot.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
