"""Every error the API answers with a status goes through the one handler and answers what it carries."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from identigraph import errors
from identigraph.serving.app import _install_errors


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _make(cls: type) -> errors.IdentigraphError:
    if cls is errors.RateLimited:
        return cls(2.2)
    if cls is errors.ModelFailure:
        return cls("m-7")
    return cls("email: not an email address")


# what each error must answer: (status, detail, headers) as the API answered before the handlers were one
EXPECTED = {
    errors.SchemaError: (422, [{"loc": ["body", "identifiers", "email"], "msg": "not a valid email",
                                "type": "identifier"}], {}),
    errors.GraphUnavailable: (503, "email: not an email address", {"retry-after": "1"}),
    errors.ModelFailure: (500, "model m-7 could not score this request (a model-side error, logged; the request "
                               "itself was valid)", {}),
    errors.Unauthorized: (401, "email: not an email address", {"www-authenticate": "Bearer"}),
    errors.Forbidden: (403, "email: not an email address", {}),
    errors.RateLimited: (429, "rate limit exceeded; retry after 2.20s", {"retry-after": "3"}),
    errors.TooCostly: (413, "email: not an email address", {}),
    errors.NotYours: (409, "email: not an email address", {}),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    _install_errors(app)
    by_name = {c.__name__: c for c in _subclasses(errors.IdentigraphError)}

    @app.get("/raise/{name}")
    def fail(name: str) -> None:
        if name == "ValueError":
            raise ValueError("a value the caller sent: 10.0.0.1")
        raise _make(by_name[name])

    return TestClient(app, raise_server_exceptions=False)


def test_every_error_with_a_status_is_answered_by_the_one_handler(client):
    with_status = {c for c in _subclasses(errors.IdentigraphError) if c.status is not None}
    assert with_status == set(EXPECTED), "a new error with a status needs its expected answer here"
    for cls, (status, detail, headers) in EXPECTED.items():
        r = client.get(f"/raise/{cls.__name__}", headers={"X-Request-ID": "r1"})
        assert r.status_code == status, cls
        assert r.json() == {"detail": detail, "request_id": None}, cls
        for name, value in headers.items():
            assert r.headers[name] == value, (cls, name)


@pytest.mark.parametrize("name", ["ConfigError", "GraphError", "LifecycleError", "ValueError"])
def test_errors_without_a_status_are_a_500_that_names_nothing(client, name):
    r = client.get(f"/raise/{name}")
    assert r.status_code == 500 and r.json()["detail"] == "internal error"
    assert name not in r.text and "10.0.0.1" not in r.text


def test_old_import_places_still_name_the_same_classes():
    from identigraph.etl.stream_events import PoisonMessage
    from identigraph.lifecycle.flow import Refused
    from identigraph.lifecycle.gate import LifecycleError
    from identigraph.serving.auth import Forbidden, RateLimited, TooCostly, Unauthorized
    from identigraph.serving.console.store import NotYours
    from identigraph.serving.service import GraphUnavailable, ModelFailure

    assert (PoisonMessage, Refused, LifecycleError, Forbidden, RateLimited, TooCostly, Unauthorized, NotYours,
            GraphUnavailable, ModelFailure) == (
        errors.PoisonMessage, errors.Refused, errors.LifecycleError, errors.Forbidden, errors.RateLimited,
        errors.TooCostly, errors.Unauthorized, errors.NotYours, errors.GraphUnavailable, errors.ModelFailure)
    assert all(issubclass(c, errors.IdentigraphError) for c in (PoisonMessage, Refused, Forbidden, NotYours))
