"""Admission: who may spend this server's threads, graph connections and memory, decided before any is spent.

A pure ASGI middleware in front of every route, in this order — each step is cheap and the next one costs
more, so a caller is refused at the first step it fails and never holds what it was not granted:

1. **request id**: the caller's ``X-Request-ID`` if it is 1-128 of ``[A-Za-z0-9._-]`` (else 400), or a new one;
2. **authentication** from the headers alone (``X-API-Key`` or ``Authorization: Bearer``): no key, an unknown
   key or a key without the route's scope is answered at once, with not a byte of the body read;
3. **the key's own limits**: one rate-limit token (the routes charge the rest of a call's cost once its
   body says what it is, e.g. 49 more for a batch of 50) and a slot of the key's ``max_concurrent``. From
   here on a slow client holds its own key's slots, nobody else's;
4. **the body**: refused unread above ``http.max_body_bytes`` when ``Content-Length`` says so, cut off when a
   chunked body passes it, and it must be complete within ``http.body_timeout_s`` (408);
5. **the server's capacity** for that kind of work, taken only now that the request is complete: scoring
   (``max_in_flight``) and identity reads (``reads.max_in_flight``) have separate bounds, and past them the
   answer is a fast 503 with ``Retry-After`` rather than a queue.

Slow request lines and headers never reach this code: the HTTP protocol closes them (``serving.server``).
The counters are touched only on the event loop, so they need no lock. Refusals carry
``Connection: close`` so that an unread body cannot keep the connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from identigraph.errors import Forbidden, IdentigraphError, RateLimited, Unauthorized
from identigraph.serving.auth import Authenticator
from identigraph.serving.config import ServingConfig
from identigraph.serving.metrics import ServingMetrics

access = logging.getLogger("identigraph.serving.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SCORING, READ, ADMIN = "scoring", "read", "admin"


@dataclass(frozen=True)
class Rule:
    """A protected path (or, with ``prefix``, every path under it): the scope it needs and its kind of work."""

    path: str
    scope: str | None   # None: no key needed (``/invocations`` behind SageMaker's IAM)
    kind: str           # SCORING | READ | ADMIN
    prefix: bool = False

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.prefix else path == self.path


class _Refused(Exception):
    """Control flow inside this middleware only: a refusal with its metrics label, answered here.

    Not an ``IdentigraphError``: it never leaves ``Admission.__call__`` (which runs before FastAPI's
    exception handlers exist for the request), and the refusals that are the API's errors too are built
    from those errors (``of``), so their status and headers are defined once, in ``errors``.
    """

    def __init__(self, status: int, reason: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers or []

    @classmethod
    def of(cls, reason: str, error: IdentigraphError) -> _Refused:
        assert error.status is not None, "only an error the API answers with a status is a refusal"
        headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers() or {}).items()]
        return cls(error.status, reason, str(error), headers)


def _retry_after(seconds: float) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(max(1, int(seconds + 0.999))).encode())]


class Admission:
    """The ASGI middleware that authenticates and bounds every request before it costs anything."""
    def __init__(self, app: Any, *, auth: Authenticator, config: ServingConfig, metrics: ServingMetrics,
                 rules: list[Rule]) -> None:
        self.app = app
        self.auth = auth
        self.metrics = metrics
        self.rules = rules
        self.http = config.http
        self.capacity = {SCORING: config.max_in_flight, READ: config.reads.max_in_flight}
        self.busy = {SCORING: 0, READ: 0, ADMIN: 0}
        self.key_busy: dict[str, int] = {}

    def _rule(self, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(path):
                return rule
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        given = presented = length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
            elif name == b"x-api-key":
                presented = value
            elif name == b"authorization" and presented is None and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
            elif name == b"content-length":
                length = value
        state = scope.setdefault("state", {})
        request_id = given.decode("latin-1") if given is not None else uuid.uuid4().hex
        state["request_id"] = request_id
        status = {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        rule = self._rule(scope["path"])
        key_id = kind = None
        try:
            if given is not None and not _REQUEST_ID.fullmatch(request_id):
                state["request_id"] = request_id = uuid.uuid4().hex
                raise _Refused(400, "bad_request_id", "X-Request-ID must be 1-128 characters of A-Z a-z 0-9 . _ -")
            if rule is not None and rule.scope is not None:
                key_id = self._admit_key(rule, presented, state)
            if scope["method"] in _BODY_METHODS:
                receive = await self._read_body(receive, length)
            if rule is not None and rule.kind in self.capacity and self.busy[rule.kind] >= self.capacity[rule.kind]:
                what = "scoring requests" if rule.kind == SCORING else "identity reads"
                raise _Refused(503, f"{rule.kind}_capacity",
                               f"overloaded: {self.capacity[rule.kind]} {what} in flight", _retry_after(1))
            if rule is not None:
                kind = rule.kind
                self.busy[kind] += 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.metrics.in_flight.dec()
        except _Refused as refused:
            self.metrics.refusals.labels(reason=refused.reason).inc()
            body = orjson.dumps({"detail": refused.detail, "request_id": request_id})
            await send_with_id({"type": "http.response.start", "status": refused.status, "headers": [
                (b"content-type", b"application/json"), (b"connection", b"close"), *refused.headers]})
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            if kind is not None:
                self.busy[kind] -= 1
            if key_id is not None:
                self.key_busy[key_id] -= 1
            seconds = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", None) or (rule.path if rule else "unmatched")
            self.metrics.latency.labels(route=route).observe(seconds)
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            if access.isEnabledFor(logging.INFO):
                access.info("request", extra={"request_id": request_id, "method": scope["method"], "route": route,
                                              "status": status["code"], "ms": round(seconds * 1000, 2),
                                              "caller": state.get("caller")})

    def _admit_key(self, rule: Rule, presented: bytes | None, state: dict) -> str:
        """Authenticate, check the scope, take the key's first token and one of its slots; the key's id."""
        try:
            key = self.auth.identify(presented.decode("latin-1") if presented else None)
        except Unauthorized as exc:
            raise _Refused.of("unauthenticated", exc) from None
        if rule.scope not in key.scopes:
            raise _Refused.of("forbidden", Forbidden(f"key {key.id!r} lacks the scope {rule.scope!r}"))
        busy = self.key_busy.get(key.id, 0)
        if busy >= key.max_concurrent:
            raise _Refused.of("key_concurrency", RateLimited(1, f"key {key.id!r} has {busy} requests in flight "
                                                                f"(max_concurrent {key.max_concurrent})"))
        wait = self.auth.buckets[key.id].take(1.0)
        if wait > 0:
            raise _Refused.of("rate_limited", RateLimited(wait))
        self.key_busy[key.id] = busy + 1
        state["api_key"], state["caller"] = key, key.id
        return key.id

    async def _read_body(self, receive: Any, length: bytes | None) -> Any:
        """The whole body, bounded in size and time, handed on to the app as one message."""
        limit = self.http.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise _Refused(400, "bad_content_length", "Content-Length is not a number") from None
            if declared > limit:
                raise _Refused(413, "body_too_large", f"body of {declared} bytes; at most {limit} (http.max_body_bytes)")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.http.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Refused(400, "client_disconnected", "the client went away before its body arrived")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, "body_too_large", f"body over {limit} bytes (http.max_body_bytes)")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _Refused(408, "body_timeout", f"the body did not arrive within {self.http.body_timeout_s:g}s "
                                                f"(http.body_timeout_s)") from None
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay
