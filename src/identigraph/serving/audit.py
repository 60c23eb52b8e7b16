"""The audit log: every decision, one JSON line, written before the caller gets it.

It answers "who asked, what did we decide, with which model" months later, when a customer disputes a
block. It holds no raw identifier: identifiers appear as keyed references (``serving.records``), so the
file is not a copy of the graph's personal data. Review cases go elsewhere (``serving.review``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson


class AuditLog:
    """Append-only JSON lines; one ``write`` per decision, flushed so a crash loses at most the line in hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # one write(2) per line: nothing waits in a buffer; open for the service's life, closed by close()
        self._fh = open(path, "ab", buffering=0)  # noqa: SIM115 — a long-lived handle, no block to scope it to
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, default=str) + b"\n"
        with self._lock:
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            self._fh.close()
