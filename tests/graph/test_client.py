"""Retries, reconnects and Neptune IAM signing."""

import time

import pytest
from botocore.credentials import Credentials
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import P

from identigraph.errors import GraphError, GraphTimeout
from identigraph.graph.client import GraphClient, is_transient, neptune_iam_headers

pytestmark = pytest.mark.services


def _server_error(message: str) -> GremlinServerError:
    return GremlinServerError({"code": 500, "message": message, "attributes": {"exceptions": []}})


def test_transient_failure_is_retried_then_succeeds(graph):
    failures = iter([_server_error("Conflict: element modified in another transaction"),
                     _server_error("ConcurrentModificationException: try again")])

    def build(g):
        exc = next(failures, None)
        if exc is not None:
            raise exc  # injected before the request is sent; the third attempt reaches the server
        return g.inject(41).math("_ + 1")

    before = graph.retries
    assert graph.submit(build, "next") == 42
    assert graph.retries - before == 2


def test_permanent_error_fails_at_once_with_graph_error(graph):
    before = graph.retries
    with pytest.raises(GraphError, match="graph request failed"):
        graph.submit(lambda g: g.inject(1).math("_ / "), "next")  # a real server-side parse error
    assert graph.retries == before


def test_deadline_stops_a_slow_traversal_on_the_server_too(settings, services):
    """A traversal that would count to a billion: the deadline ends it on the server, not only the wait.

    One connection only: the quick request after it can be sent only once the server has answered the slow
    one, so it answering at once proves the server stopped at the deadline too.
    """
    slow = lambda g: g.inject(0).repeat(__.math("_ + 1")).until(__.is_(P.gt(10**9)))  # noqa: E731
    client = GraphClient(settings, pool_size=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(GraphTimeout):
            client.submit(slow, "next", deadline=time.monotonic() + 0.3)
        assert time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        assert client.submit(lambda g: g.inject(7), "next") == 7
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(GraphTimeout):  # a deadline already spent is not even sent
            client.submit(lambda g: g.inject(1), "next", deadline=time.monotonic() - 1)
    finally:
        client.close()


def test_dropped_connection_is_rebuilt(settings, services):
    client = GraphClient(settings)
    try:
        assert client.submit(lambda g: g.inject(1), "next") == 1
        client._conn.close()  # the socket goes away under the client, as after a server restart
        assert client.submit(lambda g: g.inject(2), "next") == 2
        assert client.reconnects >= 1
    finally:
        client.close()


def test_transient_classification():
    assert is_transient(_server_error("Conflict: element modified in another transaction"))
    assert is_transient(_server_error("Vertex with id already exists: customer:seed"))  # concurrent creates
    assert is_transient(ConnectionResetError())
    assert is_transient(RuntimeError("Connection was already closed."))
    assert not is_transient(_server_error("The provided traversal has a syntax error"))
    assert not is_transient(ValueError("bad"))


def test_neptune_iam_headers_contract_sigv4_offline():
    """Contract test: SigV4 headers for the websocket handshake, computed offline from static credentials."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token="session-token")
    headers = neptune_iam_headers("db.cluster-x.eu-west-1.neptune.amazonaws.com", 8182, "eu-west-1", creds)
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/neptune-db/aws4_request" in auth
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token" in auth
    assert headers["X-Amz-Security-Token"] == "session-token" and "X-Amz-Date" in headers
