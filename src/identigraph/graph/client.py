"""Gremlin client for the local Gremlin Server and Amazon Neptune, one code path for both.

Requests are built as bytecode by a function of the traversal source (``client.submit(lambda g: ...)``),
never as strings, and re-built after a reconnect. Transient failures — optimistic-transaction conflicts
(TinkerTransactionGraph, Neptune's ConcurrentModificationException), dropped connections, expired IAM
signatures — are retried with exponential backoff and jitter; everything else fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource
from gremlin_python.process.traversal import Bytecode
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from identigraph.config import Settings
from identigraph.errors import GraphError, GraphTimeout
from identigraph.graph.graphbinary import FastGraphBinarySerializer

log = logging.getLogger(__name__)
# gremlinpython logs every server error at ERROR with the whole response; we raise or retry instead.
logging.getLogger("gremlinpython").setLevel(logging.CRITICAL)

# Substrings of server errors that a retry can fix.
_CONFLICT_MARKERS = (
    "ConcurrentModificationException",  # Neptune
    "Conflict",  # TinkerTransactionGraph: "Conflict: element modified in another transaction"
    "with id already exists",  # TinkerTransactionGraph: two transactions created the same id; one rolls back
    "TransactionException",
    "Transaction conflict",
    "ThrottlingException",
    "TooManyRequestsException",
    "ReadOnlyViolationException",  # Neptune writer fail-over in progress
)
_AUTH_MARKERS = ("AccessDenied", "Signature expired", "Missing Authentication Token", "Invalid credentials")
# the server stopped a traversal at its evaluationTimeout (Gremlin Server status 598; Neptune TimeLimitExceeded)
_TIMEOUT_MARKERS = ("598", "timeout occurred during traversal evaluation", "TimeLimitExceededException")

Fetch = Literal["list", "next", "iterate", "one_or_none"]


class _QuietBytecode(Bytecode):
    def __repr__(self) -> str:
        return f"<bytecode: {len(self.step_instructions)} steps>"


def is_connection_error(exc: BaseException) -> bool:
    """Whether the graph could not be reached at all (as opposed to refusing the request): callers degrade or
    retry."""
    import aiohttp

    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, OSError)):
        return True
    # gremlinpython signals a closed transport/pool with bare RuntimeError/Exception("... closed ...")
    return type(exc) in (RuntimeError, Exception) and "closed" in str(exc).lower()


def is_transient(exc: BaseException) -> bool:
    """Whether a retry can succeed (a conflict, a dropped connection); a spent deadline or a refused query cannot."""
    if isinstance(exc, GraphTimeout):
        return False  # the deadline is spent: nothing is left to retry in
    if isinstance(exc, GremlinServerError):
        text = f"{exc} {getattr(exc, 'status_exceptions', '')}"
        return any(m in text for m in _CONFLICT_MARKERS + _AUTH_MARKERS)
    return is_connection_error(exc)


def _rolled_back(exc: BaseException) -> bool:
    return isinstance(exc, GremlinServerError) and any(m in str(exc) for m in _CONFLICT_MARKERS)


def _needs_reconnect(exc: BaseException) -> bool:
    if isinstance(exc, GremlinServerError):
        return any(m in str(exc) for m in _AUTH_MARKERS)
    return is_connection_error(exc)


def neptune_iam_headers(host: str, port: int, region: str, credentials: Any | None = None) -> dict[str, str]:
    """SigV4-sign the websocket handshake (service ``neptune-db``); valid for minutes, so sign per connect."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = credentials or boto3.Session().get_credentials()
    if creds is None:
        raise GraphError("graph.iam_auth is on but no AWS credentials were found (env, profile or role)")
    request = AWSRequest(method="GET", url=f"https://{host}:{port}/gremlin", data=None)
    SigV4Auth(creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds,
              "neptune-db", region).add_auth(request)
    return dict(request.headers.items())


class GraphClient:
    """Thread-safe: one pooled connection shared by worker threads; reconnects replace it for all."""

    def __init__(self, settings: Settings, pool_size: int | None = None) -> None:
        self.settings = settings
        self.pool_size = pool_size or settings.graph.pool_size
        self._lock = threading.Lock()
        self._conn: DriverRemoteConnection | None = None
        self._g: GraphTraversalSource | None = None
        self._generation = 0
        self.retries = 0  # observable: how many transient failures were retried
        self.reconnects = 0
        self._requests = itertools.count(1)
        self.requests = 0  # attempts sent, retries included

    @property
    def url(self) -> str:
        scheme = "wss" if self.settings.graph.use_tls else "ws"
        return f"{scheme}://{self.settings.graph_host}:{self.settings.graph_port}/gremlin"

    @property
    def is_neptune(self) -> bool:
        return self.settings.graph.kind == "neptune"

    def _open(self) -> None:
        cfg = self.settings.graph
        headers = None
        if cfg.iam_auth:
            headers = neptune_iam_headers(self.settings.graph_host, self.settings.graph_port, cfg.region or "")
        self._conn = DriverRemoteConnection(
            self.url, cfg.traversal_source, pool_size=self.pool_size, max_workers=self.pool_size,
            headers=headers, message_serializer=FastGraphBinarySerializer(),
        )
        self._g = traversal().with_remote(self._conn)
        self._generation += 1

    def g(self) -> GraphTraversalSource:
        with self._lock:
            if self._g is None:
                self._open()
            assert self._g is not None
            return self._g

    def reconnect(self, seen_generation: int | None = None) -> None:
        """Replace the connection unless another thread already did since ``seen_generation``."""
        with self._lock:
            if seen_generation is not None and seen_generation != self._generation:
                return
            old = self._conn
            self._conn, self._g = None, None
            if old is not None:
                with contextlib.suppress(Exception):  # the old connection is broken already; closing may fail too
                    old.close()
            self._open()
            self.reconnects += 1

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn, self._g = None, None

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, build: Callable[[GraphTraversalSource], GraphTraversal], fetch: Fetch = "list",
               idempotent: bool = True, deadline: float | None = None) -> Any:
        """Build and run one request with retries. ``build`` must be side-effect free: it may run again.

        ``idempotent=False``: retry only failures that certainly rolled back (conflicts, throttling), never
        a lost connection, after which the request may or may not have committed.

        ``deadline`` (``time.monotonic()`` seconds): the request carries what is left of it as the server's
        ``evaluationTimeout``, so the server stops the traversal there, and the caller stops waiting there;
        retries happen only inside it. Past it: ``GraphTimeout``.
        """
        retry = self.settings.graph.retry
        retryable = is_transient if idempotent else _rolled_back

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            # expected under optimistic concurrency; callers see the count in UpsertStats.retries
            log.info("graph_request_retry", extra={"error": type(exc).__name__, "detail": str(exc)[:200],
                                                    "attempt": state.attempt_number})

        retrying = Retrying(
            stop=stop_after_attempt(retry.attempts),
            wait=wait_exponential_jitter(multiplier=retry.initial_backoff_s, max=retry.max_backoff_s,
                                         jitter=retry.initial_backoff_s),
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._once, build, fetch, deadline)
        except GremlinServerError as exc:
            if any(m in str(exc) for m in _TIMEOUT_MARKERS):
                raise GraphTimeout(f"graph request stopped by the server at its deadline: {str(exc)[:200]}") from exc
            raise GraphError(f"graph request failed: {str(exc)[:500]}") from exc

    def _before(self, deadline: float, build: Callable[[GraphTraversalSource], GraphTraversal], fetch: Fetch) -> Any:
        """One request bounded by ``deadline``: the server is told the time left, and we wait no longer.

        Sent through the connection's own ``Client`` (futures with timeouts) rather than the traversal's
        ``promise()``, whose extra future and callback thread cost ~0.7 ms of CPU per request.
        """
        left = deadline - time.monotonic()
        if left <= 0.001:
            raise GraphTimeout("graph request not sent: its deadline had passed")
        t = self._quiet(build(self.g().with_("evaluationTimeout", max(1, int(left * 1000)))))
        conn = self._conn
        assert conn is not None
        try:
            result_set = conn._client.submit_async(  # gremlinpython's Client behind the remote connection
                t.bytecode, request_options=DriverRemoteConnection._extract_request_options(t.bytecode),
            ).result(timeout=left)
            traversers = result_set.all().result(timeout=max(deadline - time.monotonic(), 0) + 0.05)
        except FutureTimeout:
            raise GraphTimeout(f"graph did not answer within {left * 1000:.0f} ms") from None
        values = [tr.object for tr in traversers for _ in range(tr.bulk)]
        if fetch == "list":
            return values
        if fetch == "next":
            if not values:
                raise StopIteration
            return values[0]
        return values[0] if fetch == "one_or_none" and values else None
    @staticmethod
    def _quiet(t: GraphTraversal) -> GraphTraversal:
        """gremlinpython formats ``str(bytecode)`` for debug log lines even when debug is off; for a
        1,000-row upsert that costs more than serialising it. Requests carry this cheaper repr instead."""
        t.bytecode.__class__ = _QuietBytecode
        return t

    def _once(self, build: Callable[[GraphTraversalSource], GraphTraversal], fetch: Fetch,
              deadline: float | None = None) -> Any:
        with self._lock:
            generation = self._generation
        self.requests = next(self._requests)
        try:
            if deadline is not None:
                return self._before(deadline, build, fetch)
            t = self._quiet(build(self.g()))
            if fetch == "list":
                return t.to_list()
            if fetch == "next":
                return t.next()
            if fetch == "one_or_none":
                out = t.to_list()
                return out[0] if out else None
            t.iterate()
            return None
        except Exception as exc:
            if _needs_reconnect(exc):
                with contextlib.suppress(Exception):  # reconnect again on the next attempt
                    self.reconnect(generation)
            raise
