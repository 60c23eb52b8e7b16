from pathlib import Path

import pytest

from identigraph.config import load_settings
from identigraph.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_with_local_defaults():
    s = load_settings(REPO / "conf" / "identigraph.yaml", environ={})
    assert s.profile == "local"
    assert s.graph_port == 8182 and s.services.elasticmq.port == 9324
    assert s.queue_endpoint == "http://127.0.0.1:9324"
    assert s.services.gremlin.version.startswith("3.7.")


def test_unknown_key_in_file_is_rejected_and_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("graph:\n  batch:\n    max_recrods: 10\n")
    with pytest.raises(ConfigError, match=r"graph\.batch\.max_recrods: unknown key"):
        load_settings(cfg, environ={})


def test_wrong_type_names_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("services:\n  gremlin:\n    port: eighty\n")
    with pytest.raises(ConfigError, match=r"services\.gremlin\.port"):
        load_settings(cfg, environ={})


def test_environment_overrides_file_and_is_typed(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("graph:\n  batch:\n    max_records: 10\n")
    s = load_settings(cfg, environ={"IDENTIGRAPH__GRAPH__BATCH__MAX_RECORDS": "250",
                                    "IDENTIGRAPH__GRAPH__USE_TLS": "true"})
    assert s.graph.batch.max_records == 250
    assert s.graph.use_tls is True


def test_unknown_environment_key_is_rejected():
    with pytest.raises(ConfigError, match=r"queues\.evnts: unknown key"):
        load_settings(REPO / "conf" / "identigraph.yaml", environ={"IDENTIGRAPH__QUEUES__EVNTS": "x"})


def test_missing_explicit_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(top, environ={})


def test_neptune_and_production_need_explicit_endpoints():
    with pytest.raises(ConfigError, match="graph.host is required"):
        load_settings(environ={}, overrides={"graph": {"kind": "neptune"}})
    with pytest.raises(ConfigError, match="graph.region is required"):
        load_settings(environ={}, overrides={"graph": {"iam_auth": True}})
    with pytest.raises(ConfigError, match="production profile"):
        load_settings(environ={}, overrides={"profile": "production"})


def test_neptune_example_config_is_valid():
    s = load_settings(REPO / "conf" / "neptune.example.yaml", environ={})
    assert s.graph.kind == "neptune" and s.graph.iam_auth and s.graph.batch.max_records == 200
    assert s.queue_endpoint is None  # production: AWS SQS
