"""The console's store: one sqlite file (WAL, ``synchronous=FULL``) holding cases, claims, verdicts and audit.

Why sqlite: a review team is tens of people and thousands of cases a day; one file under the data dir is
durable across restarts, needs no server, and gives transactions — a verdict and its audit line commit
together or not at all, and a case is in the store before its queue message is deleted (``intake``).
The ``verdicts`` table is the contract with the labeling job (``labeling.verdicts`` reads it read-only).

Nothing here holds a raw identifier: cases come from the serving path with keyed references
(``serving.records``), audit details are references and counts, and reviewers' notes are redacted in
the audit (``redact``) — the note itself stays in the verdict, where the reviewer put it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from identigraph.errors import NotYours

VERDICTS = ("confirm_fraud", "legitimate", "escalate")

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
  case_id TEXT PRIMARY KEY,          -- the scoring request id: one decision, one case
  customer_id TEXT NOT NULL,
  decision TEXT, score REAL, lifetime_value REAL, degraded INTEGER NOT NULL DEFAULT 0,
  model_version TEXT,
  flagged_at TEXT NOT NULL,          -- when the service decided (the case's age counts from here)
  received_at TEXT NOT NULL,
  body BLOB NOT NULL,                -- the case as the serving path sent it (references, never raw ids)
  status TEXT NOT NULL DEFAULT 'open',   -- open | decided
  claimed_by TEXT, claim_expires REAL
);
CREATE INDEX IF NOT EXISTS cases_open ON cases(status, flagged_at);
CREATE TABLE IF NOT EXISTS verdicts (
  verdict_id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL UNIQUE REFERENCES cases(case_id),
  customer_id TEXT NOT NULL,
  verdict TEXT NOT NULL CHECK (verdict IN ('confirm_fraud', 'legitimate', 'escalate')),
  note TEXT NOT NULL DEFAULT '',
  reviewer TEXT NOT NULL,
  decided_at TEXT NOT NULL,          -- ISO-8601 UTC
  graph_action TEXT                  -- blocked | cleared | none | failed: ... (filled once applied)
);
CREATE INDEX IF NOT EXISTS verdicts_customer ON verdicts(customer_id, decided_at);
CREATE TABLE IF NOT EXISTS audit (
  audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL, reviewer TEXT, action TEXT NOT NULL, case_id TEXT, detail BLOB
);
CREATE TABLE IF NOT EXISTS rejected_messages (
  message_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, reason TEXT NOT NULL, body BLOB
);
CREATE TABLE IF NOT EXISTS sessions (
  token_sha256 TEXT PRIMARY KEY, key_id TEXT NOT NULL, scopes TEXT NOT NULL, csrf TEXT NOT NULL,
  expires REAL NOT NULL
);
"""

_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_IPV6 = re.compile(r"\b(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}\b")
_DIGITS = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_HEXY = re.compile(r"\b[0-9a-fA-F-]{16,}\b")


def redact(text: str) -> str:
    """A note as the audit keeps it: emails, IPs, phone-like digit runs and long hex ids (devices, cards)
    replaced, so that the audit file never becomes a copy of identifiers a reviewer pasted into a note."""
    for pattern, token in ((_EMAIL, "[email]"), (_IPV4, "[ip]"), (_IPV6, "[ip]"), (_HEXY, "[id]"),
                           (_DIGITS, "[number]")):
        text = pattern.sub(token, text)
    return text


def now_iso() -> str:
    """One timestamp format in the store (UTC, milliseconds), so its text columns sort by time."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ConsoleStore:
    """Thread-safe access to the console's sqlite file (one connection, one lock: the console's load is
    a few requests a second, and one writer is what sqlite allows anyway)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed case or verdict survives a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _audit(db: sqlite3.Connection, reviewer: str | None, action: str, case_id: str | None,
               detail: dict[str, Any] | None = None) -> None:
        db.execute("INSERT INTO audit(ts, reviewer, action, case_id, detail) VALUES (?, ?, ?, ?, ?)",
                   (now_iso(), reviewer, action, case_id, orjson.dumps(detail or {})))

    # ---- intake --------------------------------------------------------------------------------------
    def add_case(self, case: dict[str, Any]) -> bool:
        """Insert a case from the queue; False if its id is already here (a redelivery, not a new case)."""
        case_id = str(case["request_id"])
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO cases(case_id, customer_id, decision, score, lifetime_value, degraded, "
                "model_version, flagged_at, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (case_id, str(case["customer_id"]), case.get("decision"), case.get("score"),
                 case.get("lifetime_value"), int(bool(case.get("degraded"))), case.get("model_version"),
                 str(case.get("ts") or now_iso()), now_iso(), orjson.dumps(case)))
            if cur.rowcount:
                self._audit(db, None, "case_received", case_id, {"customer_id": case["customer_id"]})
            return bool(cur.rowcount)

    def reject(self, message_id: str, reason: str, body: str) -> None:
        """A queue message that is not a case: kept with its reason (and counted on the queue page)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO rejected_messages VALUES (?, ?, ?, ?)",
                       (message_id, now_iso(), reason, body[:65_536].encode()))

    # ---- reading -------------------------------------------------------------------------------------
    def open_cases(self, decision: str | None = None, min_score: float | None = None,
                   min_ltv: float | None = None, customer: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Open cases, oldest first (the one waiting longest is the one to work next)."""
        sql = "SELECT * FROM cases WHERE status = 'open'"
        args: list[Any] = []
        for cond, value in (("decision = ?", decision), ("score >= ?", min_score),
                            ("lifetime_value >= ?", min_ltv), ("customer_id = ?", customer)):
            if value not in (None, ""):
                sql += f" AND {cond}"
                args.append(value)
        sql += " ORDER BY flagged_at, case_id LIMIT ?"
        return [dict(r) for r in self._query(sql, (*args, limit))]

    def case(self, case_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM cases WHERE case_id = ?", (case_id,))
        if not rows:
            return None
        out = dict(rows[0])
        out["body"] = orjson.loads(out["body"])
        verdict = self._query("SELECT * FROM verdicts WHERE case_id = ?", (case_id,))
        out["verdict"] = dict(verdict[0]) if verdict else None
        return out

    def verdicts(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM verdicts ORDER BY verdict_id")]

    def audit_lines(self, case_id: str | None = None) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM audit" + (" WHERE case_id = ?" if case_id else "") + " ORDER BY audit_id",
                           (case_id,) if case_id else ())
        return [{**dict(r), "detail": orjson.loads(r["detail"] or b"{}")} for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, count(*) AS n FROM cases GROUP BY status")
        out = {r["status"]: r["n"] for r in rows}
        out["rejected_messages"] = self._query("SELECT count(*) AS n FROM rejected_messages")[0]["n"]
        return out

    # ---- claims and verdicts -------------------------------------------------------------------------
    def claim(self, case_id: str, reviewer: str, ttl_s: float) -> tuple[bool, str | None, float | None]:
        """Take (or renew) the claim on an open case: (held by me?, holder, expiry). One reviewer at a time;
        a claim nobody renews lapses after ``ttl_s``, so a reviewer who walks away does not lock a case."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status, claimed_by, claim_expires FROM cases WHERE case_id = ?",
                             (case_id,)).fetchone()
            if row is None or row["status"] != "open":
                return False, row and row["claimed_by"], None
            holder, expires = row["claimed_by"], row["claim_expires"]
            if holder not in (None, reviewer) and expires is not None and expires > now:
                return False, holder, expires
            db.execute("UPDATE cases SET claimed_by = ?, claim_expires = ? WHERE case_id = ?",
                       (reviewer, now + ttl_s, case_id))
            if holder != reviewer or expires is None or expires <= now:
                self._audit(db, reviewer, "case_claimed", case_id, {"previous": holder})
            return True, reviewer, now + ttl_s

    def release(self, case_id: str, reviewer: str) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE cases SET claimed_by = NULL, claim_expires = NULL "
                             "WHERE case_id = ? AND claimed_by = ? AND status = 'open'", (case_id, reviewer))
            if cur.rowcount:
                self._audit(db, reviewer, "case_released", case_id)
            return bool(cur.rowcount)

    def decide(self, case_id: str, reviewer: str, verdict: str, note: str) -> int:
        """Record a verdict on a case the reviewer holds: verdict, case status and audit line in one
        transaction. Raises NotYours if the claim is not (or no longer) the reviewer's or the case is decided."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}")
        with self._tx() as db:
            row = db.execute("SELECT customer_id, status, claimed_by, claim_expires FROM cases WHERE case_id = ?",
                             (case_id,)).fetchone()
            if row is None:
                raise KeyError(case_id)
            if row["status"] != "open":
                raise NotYours("this case already has a verdict")
            if row["claimed_by"] != reviewer or (row["claim_expires"] or 0) <= time.time():
                raise NotYours("claim the case before recording a verdict (another reviewer may hold it)")
            decided = now_iso()
            cur = db.execute("INSERT INTO verdicts(case_id, customer_id, verdict, note, reviewer, decided_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (case_id, row["customer_id"], verdict, note, reviewer, decided))
            db.execute("UPDATE cases SET status = 'decided', claimed_by = NULL, claim_expires = NULL "
                       "WHERE case_id = ?", (case_id,))
            self._audit(db, reviewer, "verdict", case_id, {"customer_id": row["customer_id"], "verdict": verdict,
                                                           "note": redact(note)})
            assert cur.lastrowid is not None, "an INSERT always sets lastrowid"
            return int(cur.lastrowid)

    def applied(self, verdict_id: int, reviewer: str, outcome: str) -> None:
        """What the verdict did to the graph (blocked, cleared, none, or failed with why)."""
        with self._tx() as db:
            row = db.execute("UPDATE verdicts SET graph_action = ? WHERE verdict_id = ? RETURNING case_id",
                             (outcome, verdict_id)).fetchone()
            self._audit(db, reviewer, "graph_action", row["case_id"] if row else None,
                        {"verdict_id": verdict_id, "outcome": outcome})

    def pending_actions(self) -> list[dict[str, Any]]:
        """Verdicts whose graph action has not been recorded (the console stopped in between): retried."""
        return [dict(r) for r in self._query("SELECT * FROM verdicts WHERE graph_action IS NULL "
                                             "OR graph_action LIKE 'failed%' ORDER BY verdict_id")]

    def note(self, reviewer: str | None, action: str, case_id: str | None = None,
             detail: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            self._audit(db, reviewer, action, case_id, detail)

    # ---- sessions ------------------------------------------------------------------------------------
    def new_session(self, key_id: str, scopes: list[str], ttl_s: float) -> tuple[str, str]:
        """(cookie token, CSRF token). Only the token's SHA-256 is stored, like the API keys."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                       (hashlib.sha256(token.encode()).hexdigest(), key_id, " ".join(scopes), csrf,
                        time.time() + ttl_s))
            self._audit(db, key_id, "login", None)
        return token, csrf

    def session(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return None
        rows = self._query("SELECT key_id, scopes, csrf, expires FROM sessions WHERE token_sha256 = ?",
                           (hashlib.sha256(token.encode()).hexdigest(),))
        if not rows or rows[0]["expires"] < time.time():
            return None
        return {"key_id": rows[0]["key_id"], "scopes": rows[0]["scopes"].split(), "csrf": rows[0]["csrf"]}

    def end_session(self, token: str, key_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (hashlib.sha256(token.encode()).hexdigest(),))
            self._audit(db, key_id, "logout", None)
