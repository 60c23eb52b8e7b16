"""Every configuration kind is read the same way: packaged defaults, a file, the environment, overrides."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from identigraph.config import load_settings
from identigraph.config_loader import KINDS, packaged_default, parse_sets, set_dotted
from identigraph.errors import ConfigError
from identigraph.labeling.config import load_labeling_config
from identigraph.lifecycle.config import load_lifecycle_config, load_tune_config
from identigraph.model.config import load_model_config
from identigraph.serving.config import load_serving_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_with_local_defaults():
    s = load_settings(packaged_default("identigraph.yaml"), environ={})
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
        load_settings(packaged_default("identigraph.yaml"), environ={"IDENTIGRAPH__QUEUES__EVNTS": "x"})


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
    with pytest.raises(ConfigError, match=r"graph\.host is required"):
        load_settings(environ={}, overrides={"graph": {"kind": "neptune"}})
    with pytest.raises(ConfigError, match=r"graph\.region is required"):
        load_settings(environ={}, overrides={"graph": {"iam_auth": True}})
    with pytest.raises(ConfigError, match="production profile"):
        load_settings(environ={}, overrides={"profile": "production"})


def test_neptune_example_config_is_valid():
    s = load_settings(REPO / "conf" / "neptune.example.yaml", environ={})
    assert s.graph.kind == "neptune" and s.graph.iam_auth and s.graph.batch.max_records == 200
    assert s.queue_endpoint is None  # production: AWS SQS

# --- one mechanism for every kind of configuration (issue 18) ---
LOADERS = {"identigraph.yaml": lambda **kw: load_settings(**kw), "serving.yaml": load_serving_config,
           "labeling.yaml": load_labeling_config, "model.yaml": load_model_config,
           "lifecycle.yaml": load_lifecycle_config, "tune.yaml": load_tune_config}


def test_every_kind_has_a_packaged_default_and_its_own_prefix():
    assert sorted(k.default_file for k in KINDS) == sorted(LOADERS)
    for kind in KINDS:
        assert packaged_default(kind.default_file).is_file()
    prefixes = [k.env_prefix for k in KINDS]
    assert len(set(prefixes)) == len(prefixes)
    # no prefix is the start of another kind's file variable or of another prefix
    for kind in KINDS:
        assert not any(kind.file_env.startswith(p) for p in prefixes)
        assert not any(p != kind.env_prefix and p.startswith(kind.env_prefix) for p in prefixes)


def test_packaged_defaults_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no conf/ here
    for name, load in LOADERS.items():
        assert load(environ={}) is not None, name
    assert load_settings(environ={}).graph.batch.concurrency == 2  # the packaged file, not the code default (1)
    # and from a fresh interpreter started elsewhere (what an installed console script does)
    code = ("from identigraph.model.config import load_model_config; from identigraph.serving.config import "
            "load_serving_config; print(load_model_config().target_label, len(load_serving_config().api_keys) > 0)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTIGRAPH")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["customer", "True"]


def test_environment_overrides_every_kind_not_only_the_settings(tmp_path):
    assert load_model_config(environ={"IDENTIGRAPH_MODEL__TRAINING__EPOCHS": "7"}).training.epochs == 7
    assert load_serving_config(environ={"IDENTIGRAPH_SERVING__POLICY__THRESHOLD": "0.7"}).policy.threshold == 0.7
    assert load_labeling_config(environ={"IDENTIGRAPH_LABELING__MATURITY__MATURITY_DAYS": "45"}
                                ).maturity.maturity_days == 45
    assert load_lifecycle_config(environ={"IDENTIGRAPH_LIFECYCLE__DEPLOY__KEEP": "2"}).deploy.keep == 2
    assert load_tune_config(environ={"IDENTIGRAPH_TUNE__TRIALS": "3"}).trials == 3
    # a dotted override still wins over the environment
    assert load_model_config(overrides={"training.epochs": 9},
                             environ={"IDENTIGRAPH_MODEL__TRAINING__EPOCHS": "7"}).training.epochs == 9
    with pytest.raises(ConfigError, match=r"training\.epoch: unknown key"):
        load_model_config(environ={"IDENTIGRAPH_MODEL__TRAINING__EPOCH": "7"})


def test_file_variables_name_the_file_for_every_kind(tmp_path):
    model = tmp_path / "m.yaml"
    model.write_text("training:\n  epochs: 3\n")
    assert load_model_config(environ={"IDENTIGRAPH_MODEL_CONFIG": str(model)}).training.epochs == 3
    serving = tmp_path / "s.yaml"
    serving.write_text(packaged_default("serving.yaml").read_text() + "\nmax_batch: 7\n")
    assert load_serving_config(environ={"IDENTIGRAPH_SERVING_CONFIG": str(serving)}).max_batch == 7
    with pytest.raises(ConfigError, match="not found"):
        load_labeling_config(environ={"IDENTIGRAPH_LABELING_CONFIG": str(tmp_path / "none.yaml")})


@pytest.mark.parametrize("name, text, key", [
    ("identigraph.yaml", "graph:\n  hots: x\n", "graph.hots"),
    ("serving.yaml", "api_keys: []\nexplain: {top: 3}\n", "explain.top"),
    ("labeling.yaml", "maturity:\n  maturity_day: 3\n", "maturity.maturity_day"),
    ("model.yaml", "training:\n  epoch: 3\n", "training.epoch"),
    ("lifecycle.yaml", "registry:\n  backnd: mlflow\n", "registry.backnd"),
    ("tune.yaml", "trails: 3\n", "trails"),
])
def test_an_unknown_key_is_named_with_its_file_in_one_format(tmp_path, name, text, key):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        LOADERS[name](path=path, environ={})
    message = str(exc.value)
    assert f"({path})" in message.splitlines()[0]
    assert f"  {key}: unknown key" in message.splitlines()


def test_dotted_overrides_replace_and_sets_parse_yaml():
    data = {"gate": {"min": {"test.auprc": 0.4}}}
    set_dotted(data, "gate.min", {"test.auroc": 0.5})
    set_dotted(data, "deploy.keep", 3)
    assert data == {"gate": {"min": {"test.auroc": 0.5}}, "deploy": {"keep": 3}}
    with pytest.raises(ConfigError, match="is not a section"):
        set_dotted(data, "deploy.keep.x", 1)
    assert parse_sets(["training.epochs=20", "split=time", "network.hidden=16"]) == {
        "training.epochs": 20, "split": "time", "network.hidden": 16}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_sets(["training.epochs"])


def test_label_takes_its_policy_from_labeling_config(tmp_path):
    from identigraph.cli import app

    policy = tmp_path / "policy.yaml"
    policy.write_text("maturity:\n  maturity_dayz: 1\n")
    args = ["label", "--snapshot", str(tmp_path / "nosnap"), "--out", str(tmp_path / "out")]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--labeling-config", str(policy)])
    # the policy is checked before Spark starts, and the error names the file and the key
    assert isinstance(result.exception, ConfigError), result.output
    assert "maturity.maturity_dayz: unknown key" in str(result.exception) and str(policy) in str(result.exception)
    old = runner.invoke(app, [*args, "--config", str(policy)])  # the old spelling, hidden and deprecated
    assert isinstance(old.exception, ConfigError) and "maturity_dayz" in str(old.exception)
    assert "--labeling-config" in runner.invoke(app, ["label", "--help"]).output


def test_cli_carries_the_settings_on_the_context(tmp_path):
    from identigraph.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: /somewhere/else\n")
    result = CliRunner().invoke(app, ["--config", str(cfg), "config", "show"])
    assert result.exit_code == 0, result.output
    assert '"data_dir": "/somewhere/else"' in result.output
    # the lifecycle commands import nothing from identigraph.cli (no import cycle)
    source = (Path(__file__).resolve().parents[1] / "src/identigraph/lifecycle/cli.py").read_text()
    assert "identigraph.cli " not in source and "from identigraph.cli import" not in source


def test_the_defaults_are_package_data_so_a_plain_install_carries_them():
    import fnmatch

    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["identigraph"]
    package = root / "src" / "identigraph"
    for kind in KINDS:
        shipped = packaged_default(kind.default_file)
        assert shipped.resolve().is_relative_to(package.resolve()), shipped
        relative = shipped.resolve().relative_to(package.resolve()).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
    # the image installs without -e: nothing there may depend on the checkout's layout
    dockerfile = (root / "deploy" / "Dockerfile").read_text()
    assert "pip install" in dockerfile and " -e " not in dockerfile
