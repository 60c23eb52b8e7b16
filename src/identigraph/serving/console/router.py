"""The review console's pages under ``/review``, for keys with the ``review`` scope.

A browser cannot put an ``X-API-Key`` header on a link, so the reviewer signs in once with the key: the
key is checked like any API call (scope, rate limit), then the console issues a session (a random token in an
``HttpOnly``, ``SameSite=Strict`` cookie; only its SHA-256 is stored) and every form carries that session's
CSRF token. Each request re-reads the key's scopes from the serving config, so removing a key or its
``review`` scope ends its sessions at once. Admission still bounds these requests' bodies and time;
the pages are not in its rules because their credential is the cookie, checked here.

Pages: the queue (open cases, oldest first, filters), a case (claimed on opening, one reviewer at a time;
evidence read live from the graph, the case's own evidence and attributions, a drawing), and the verdict,
which is stored, audited and applied to the graph (``console.verdicts``) before the reviewer sees it done.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from identigraph.errors import Forbidden, GraphUnavailable, NotYours, Unauthorized
from identigraph.etl.stream_writer import StreamWriter
from identigraph.serving.config import ApiKey, ServingConfig
from identigraph.serving.console import evidence
from identigraph.serving.console import verdicts as apply_verdicts
from identigraph.serving.console.intake import CaseIntake
from identigraph.serving.console.store import VERDICTS, ConsoleStore
from identigraph.serving.guard import Rule
from identigraph.serving.service import ScoringService

log = logging.getLogger("identigraph.serving")
COOKIE = "identigraph_review"
SCOPE = "review"
MAX_NOTE = 2000
_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=True, undefined=jinja2.ChainableUndefined)


def rules(cfg: ServingConfig) -> list[Rule]:
    """None: admission does not guard the console, whose credential is the session cookie."""
    return []  # the credential is the session cookie, checked by the pages themselves (see the docstring)


class Console:
    """The console's parts: the store, the intake thread, the graph writer for verdicts."""

    def __init__(self, service: ScoringService, cfg: ServingConfig) -> None:
        self.service, self.cfg = service, cfg.console
        settings = service.settings
        self.keys = {k.id: k for k in cfg.api_keys}
        self.store = ConsoleStore(settings.data_path / cfg.console.store_file)
        sqs = service.review.sqs if service.review is not None else None
        if sqs is None:
            from identigraph.etl.publish import sqs_client

            sqs = sqs_client(settings)
        self.intake = CaseIntake(sqs, settings.queues.review, self.store, cfg.console.poll_wait_s)
        # reviewers' reads and writes use the identity-read pool: never scoring's connections
        self.writer = StreamWriter(service.read_client, service.pseudo)

    def start(self) -> None:
        self.intake.start()
        for v in self.store.pending_actions():  # verdicts stored before a stop, their graph change not recorded
            self.apply(v["verdict_id"], v["verdict"], v["customer_id"], v["reviewer"])

    def close(self) -> None:
        self.intake.close()
        self.store.close()

    def apply(self, verdict_id: int, verdict: str, customer: str, reviewer: str) -> str:
        """Apply a stored verdict to the graph and record the outcome; never raises for a graph outage."""
        try:
            blocked = self.service.graph_call(lambda deadline: self.service.read_client.submit(
                lambda g: g.V(f"customer:{customer}").values("blocked"), "one_or_none", deadline=deadline),
                self.service.config.reads.timeout_s)
            outcome = apply_verdicts.apply(self.writer, verdict, verdict_id, customer, blocked is True, self.cfg)
        except Exception as exc:
            log.warning("review_verdict_not_applied", extra={"verdict_id": verdict_id,
                                                                 "error": type(exc).__name__})
            outcome = "failed: graph unavailable, retried when the console starts"
        self.store.applied(verdict_id, reviewer, outcome)
        return outcome

    # ---- sessions ------------------------------------------------------------------------------------
    def reviewer(self, request: Request) -> tuple[ApiKey, dict[str, Any]] | None:
        session = self.store.session(request.cookies.get(COOKIE))
        key = self.keys.get(session["key_id"]) if session else None
        if key is None or SCOPE not in key.scopes:
            return None
        return key, session  # type: ignore[return-value]


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context), status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                            "script-src 'unsafe-inline'; img-src 'self' data:"})


def _to_login() -> RedirectResponse:
    return RedirectResponse("/review/login", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def router(service: ScoringService, cfg: ServingConfig) -> APIRouter:
    """The console's pages, or no routes at all when the console is not enabled."""
    if not cfg.console.enabled:
        return APIRouter()
    console = Console(service, cfg)

    @asynccontextmanager
    async def lifespan(app: Any):
        app.state.review_console = console  # tests and the demo reach the store through it
        await run_in_threadpool(console.start)
        yield
        await run_in_threadpool(console.close)

    api = APIRouter(prefix="/review", tags=["review console"], include_in_schema=False, lifespan=lifespan)

    def signed_in(request: Request) -> tuple[ApiKey, dict[str, Any]] | None:
        found = console.reviewer(request)
        if found is not None:
            request.state.caller = found[0].id
            request.app.state.auth.charge(found[0], 1.0)  # pages cost a token like any call (RateLimited: 429)
        return found

    @api.get("")
    def home() -> Response:
        return RedirectResponse("/review/queue", status_code=303)

    @api.get("/login")
    def login_page() -> Response:
        return _page("login.html")

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        try:
            key = request.app.state.auth.check(form.get("key", ""), SCOPE)
        except Unauthorized:
            return _page("login.html", 401, error="That key is not known.")
        except Forbidden:
            return _page("login.html", 403, error="That key has no review scope.")
        token, _ = await run_in_threadpool(console.store.new_session, key.id, list(key.scopes), cfg.console.session_ttl_s)
        response = RedirectResponse("/review/queue", status_code=303)
        response.set_cookie(COOKIE, token, max_age=int(cfg.console.session_ttl_s), path="/review", httponly=True,
                            samesite="strict", secure=cfg.console.secure_cookie)
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        found, form = signed_in(request), await _form(request)
        if found is not None and form.get("csrf") == found[1]["csrf"]:
            await run_in_threadpool(console.store.end_session, request.cookies[COOKIE], found[0].id)
        response = _to_login()
        response.delete_cookie(COOKIE, path="/review")
        return response

    @api.get("/queue")
    def queue(request: Request, decision: str | None = None, min_score: str | None = None,
              min_ltv: str | None = None, customer: str | None = None) -> Response:
        found = signed_in(request)
        if found is None:
            return _to_login()
        key, session = found
        filters: dict[str, Any] = {"decision": decision if decision in ("review", "block", "allow") else None,
                   "min_score": _number(min_score), "min_ltv": _number(min_ltv), "customer": customer or None}
        limit = 200
        cases = console.store.open_cases(**filters, limit=limit)
        for c in cases:
            c["reasons"] = json.loads(c.pop("body")).get("reasons", [])[:2]
        return _page("queue.html", reviewer=key.id, csrf=session["csrf"], cases=cases, filters=filters,
                     limit=limit, counts=console.store.counts())

    def case_page(request: Request, key: ApiKey, session: dict[str, Any], case_id: str, status: int = 200,
                  error: str | None = None, flash: str | None = None) -> Response:
        case = console.store.case(case_id)
        if case is None:
            return _page("base.html", 404, reviewer=key.id, csrf=session["csrf"], error="No such case.")
        mine, holder, until = (False, None, None)
        if case["status"] == "open":
            mine, holder, until = console.store.claim(case_id, key.id, cfg.console.claim_ttl_s)
        console.store.note(key.id, "case_viewed", case_id)
        in_clear = "identity:read" in key.scopes
        hood, problem, drawing = None, None, None
        try:
            hood = service.graph_call(lambda deadline: evidence.read(
                service.read_client, case["customer_id"], cfg.console.max_drawn_per_identifier, deadline),
                service.config.reads.timeout_s)
            if hood is None:
                problem = "The customer is not in the graph (yet): nothing to draw."
            else:
                hood = evidence.shown(hood, service.pseudo, in_clear)
                drawing = evidence.svg(hood)
        except GraphUnavailable:
            problem = "The graph did not answer: the evidence below is the case's own, from when it was scored."
        body = case["body"]
        flagged = {e.get("identifier_ref") for e in (body.get("explanation") or {}).get("evidence") or []}
        return _page("case.html", status, reviewer=key.id, csrf=session["csrf"], case=case, body=body, hood=hood,
                     graph_problem=problem, drawing=drawing, mine=mine, holder=holder,
                     holder_until=datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds")
                     if until else None, in_clear=in_clear, flagged_refs=flagged, cfg=cfg.console,
                     audit=console.store.audit_lines(case_id), error=error, flash=flash)

    @api.get("/cases/{case_id}")
    def case(request: Request, case_id: str, done: str | None = None) -> Response:
        found = signed_in(request)
        if found is None:
            return _to_login()
        return case_page(request, *found, case_id, flash="Verdict recorded." if done else None)

    @api.post("/cases/{case_id}/verdict")
    async def verdict(request: Request, case_id: str) -> Response:
        found, form = signed_in(request), await _form(request)
        if found is None:
            return _to_login()
        key, session = found
        if form.get("csrf") != session["csrf"]:
            return await run_in_threadpool(case_page, request, key, session, case_id, 403,
                                           "The form is stale (sign in again).")
        choice, note = form.get("verdict", ""), form.get("note", "").strip()
        if choice not in VERDICTS or len(note) > MAX_NOTE:
            return await run_in_threadpool(case_page, request, key, session, case_id, 422,
                                           f"Choose one of {', '.join(VERDICTS)}; a note has at most {MAX_NOTE} characters.")
        try:
            verdict_id = await run_in_threadpool(console.store.decide, case_id, key.id, choice, note)
        except KeyError:
            return await run_in_threadpool(case_page, request, key, session, case_id, 404)
        except NotYours as exc:
            return await run_in_threadpool(case_page, request, key, session, case_id, exc.status, str(exc))
        decided = await run_in_threadpool(console.store.case, case_id)
        assert decided is not None, "decide() found the case a moment ago, and cases are never deleted"
        customer = decided["customer_id"]
        await run_in_threadpool(console.apply, verdict_id, choice, customer, key.id)
        return RedirectResponse(f"/review/cases/{quote(case_id, safe='')}?done=1", status_code=303)

    @api.post("/cases/{case_id}/release")
    async def release(request: Request, case_id: str) -> Response:
        found, form = signed_in(request), await _form(request)
        if found is None:
            return _to_login()
        if form.get("csrf") == found[1]["csrf"]:
            await run_in_threadpool(console.store.release, case_id, found[0].id)
        return RedirectResponse("/review/queue", status_code=303)

    return api
