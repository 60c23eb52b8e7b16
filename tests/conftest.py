"""Session fixtures: a real Gremlin Server and ElasticMQ, started through the same code as `services up`.

They run on free ports with their own data directory, so a developer's running demo is never touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from identigraph.config import Settings, load_settings
from identigraph.config_loader import packaged_default
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.services import local
from identigraph.services.process import free_port

REPO = Path(__file__).resolve().parents[1]


def make_settings(data_dir: Path, **extra) -> Settings:
    overrides = {
        "data_dir": str(data_dir),
        # checkpoints every second: the stream consumer acknowledges a message once one holds it
        "services": {"gremlin": {"port": free_port(), "heap": "1g", "checkpoint_interval_s": 1},
                     "elasticmq": {"port": free_port()}},
        # short backoffs keep outage tests quick, but 12 attempts (~3.6 s) as shipped: a small world's edge batches
        # all share customers, so loads conflict every few batches and 6 attempts (0.6 s) lost the optimistic race
        # in ~1 of 15 loads on a busy box (CI failed that way once)
        "graph": {"retry": {"attempts": 12, "initial_backoff_s": 0.02, "max_backoff_s": 0.5}},
    }
    overrides.update(extra)
    # The repository's own conf/identigraph.yaml underneath: tests exercise the shipped config.
    return load_settings(path=packaged_default("identigraph.yaml"), environ={}, overrides=overrides)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the mark it adds must count there
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the ``services`` or the ``spark`` fixture (directly or through ``session_client``,
    ``graph`` or a module fixture built on them) is a ``services`` test, so ``-m "not services"`` never starts a
    server or a Spark session, whether or not its module remembered the mark."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ())) & {"services", "spark"}
        if needs and item.get_closest_marker("services") is None:
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("identigraph-data"))


@pytest.fixture(scope="session")
def services(settings: Settings):
    reports = local.up(settings)
    yield reports
    local.down(settings)


@pytest.fixture(scope="session")
def session_client(settings: Settings, services) -> GraphClient:
    client = GraphClient(settings)
    yield client
    client.close()


@pytest.fixture
def graph(session_client: GraphClient) -> GraphClient:
    """A client on an empty graph."""
    from identigraph.graph import queries

    queries.clear(session_client)
    return session_client


@pytest.fixture(scope="session")
def pseudo() -> Pseudonymiser:
    return Pseudonymiser(b"test-key-0123456789abcdef")


@pytest.fixture(scope="session")
def spark(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """One local Spark for the whole run (JVM start-up is seconds; the jobs are small)."""
    from identigraph.etl.spark import session

    local_settings = settings.model_copy(update={"etl": settings.etl.model_copy(
        update={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "2g", "output_files": 1})})
    # an embedded (Derby) Hive metastore for the Hive-table tests; the S3A jars when setup fetched them
    spark = session(local_settings, app_name="identigraph-tests", hive_dir=tmp_path_factory.mktemp("hive"))
    yield spark
    spark.stop()
