"""Typed errors. Each names what is wrong so a user can fix it without reading a traceback.

Every error the package raises is here, under ``IdentigraphError``. The CLI prints any of them as one
line; the API answers each with the HTTP status it carries (``status``), its ``detail()`` and its
``headers()`` through one exception handler (``serving.app``), so a route never maps errors itself and
no handler parses a message. An error without a status is an internal error to the API (500, logged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the verdict's type only: errors sit below every stage and import none of them
    from identigraph.lifecycle.gate import Verdict


class IdentigraphError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""

    status: ClassVar[int | None] = None  # the HTTP status the API answers with; None: an internal error
    fixed_headers: ClassVar[tuple[tuple[str, str], ...]] = ()  # headers the status always calls for

    def detail(self) -> Any:
        """The API's ``detail``: the message, which never repeats a request value."""
        return str(self)

    def headers(self) -> dict[str, str] | None:
        """Response headers the status calls for (``Retry-After``, ``WWW-Authenticate``)."""
        return dict(self.fixed_headers) if self.fixed_headers else None


class ConfigError(IdentigraphError):
    """The configuration tree is invalid (the message names each bad field)."""


class ServiceError(IdentigraphError):
    """A local service could not be fetched, started, reached or stopped."""


class JavaNotFoundError(ServiceError):
    """No Java runtime for the local Gremlin Server and ElasticMQ: the message says what to install."""


class PortInUseError(ServiceError):
    """A local service's port is taken by another process: the message names the port."""


class GraphError(IdentigraphError):
    """A graph request failed for a reason retries cannot fix."""


class GraphTimeout(GraphError):
    """A graph request passed its deadline; the server was told the same deadline and stops there too."""


class PiiKeyError(IdentigraphError):
    """No pseudonymisation key where one is required."""


class SchemaError(IdentigraphError):
    """A record does not fit the graph schema or the input contract (names the field).

    Messages name the field first (``"email: not an email address"``) and never repeat the value, so
    ``field`` defaults to that prefix and the API's 422 names the field without echoing what was sent.
    """

    status = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field if field is not None else message.split(":", 1)[0]

    def problem(self, *where: str | int) -> dict[str, Any]:
        """One validation error as the API shows it, at ``where`` (e.g. ``body, requests, 3, identifiers``)."""
        return {"loc": [*where, self.field], "msg": f"not a valid {self.field}", "type": "identifier"}

    def detail(self) -> Any:
        """A score request's identifiers are the only request input the services check themselves."""
        return [self.problem("body", "identifiers")]


class PoisonMessage(IdentigraphError):
    """A stream message that no retry can make valid; goes to the dead-letter queue with this reason."""


# ---- serving ------------------------------------------------------------------------------------------

class GraphUnavailable(IdentigraphError):
    """The graph failed or did not answer within ``graph.timeout_s``: scores degrade, reads answer 503."""

    status = 503
    fixed_headers = (("Retry-After", "1"),)  # an outage is short, or nothing the caller does sooner helps


class ModelFailure(IdentigraphError):
    """The served model failed on a request whose input was valid: a 5xx that names the model, never a 422."""

    status = 500

    def __init__(self, version: str) -> None:
        super().__init__(f"model {version} could not score this request (a model-side error, logged; "
                         f"the request itself was valid)")
        self.version = version


class Unauthorized(IdentigraphError):
    """No key, or one that matches nothing: 401."""

    status = 401
    fixed_headers = (("WWW-Authenticate", "Bearer"),)  # RFC 9110: a 401 names the scheme that would be accepted


class Forbidden(IdentigraphError):
    """A valid key without the scope the route needs: 403."""

    status = 403


class RateLimited(IdentigraphError):
    """The key's bucket is empty, or it has ``max_concurrent`` requests in flight: 429 with Retry-After."""

    status = 429

    def __init__(self, retry_after_s: float, detail: str | None = None) -> None:
        super().__init__(detail or f"rate limit exceeded; retry after {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Whole seconds, rounded up and at least 1: a client retrying sooner would be refused again."""
        return {"Retry-After": str(max(1, int(self.retry_after_s + 0.999)))}


class TooCostly(IdentigraphError):
    """One call costs more tokens than the key's bucket holds: it could never pass, so 413, not 429."""

    status = 413


class NotYours(IdentigraphError):
    """The review case is claimed by another reviewer, or already decided."""

    status = 409


# ---- lifecycle -----------------------------------------------------------------------------------------

class LifecycleError(IdentigraphError):
    """A lifecycle step was refused or failed; the message says why."""


class Refused(LifecycleError):
    """The gate or the staging check said no; ``verdict`` holds every check (the CLI prints them)."""

    def __init__(self, what: str, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(f"{what} refused:\n  - " + "\n  - ".join(verdict.reasons))
