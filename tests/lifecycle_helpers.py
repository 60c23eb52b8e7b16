"""Shared by the lifecycle tests: stand-in model directories and an MLflow registry that starts fast.

A registry test needs model directories the registry can store and hand back, not models that score:
``fake_model`` writes the files ``identigraph train`` writes, with the figures the test wants in
metrics.json. A new MLflow sqlite database runs every schema migration (seconds), so one empty database is
made per test process and copied for each registry.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from identigraph.lifecycle.registry import MlflowRegistry

_TEMPLATE: dict[str, Path] = {}


def fake_model(path: Path, version: str, auprc: float = 0.8, recall: float = 0.6, reached: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    split = {"auroc": 0.95, "auprc": auprc, "recall_at_p85": recall, "recall_at_p90": recall * 0.9,
             "precision_at_r50": 0.9, "n": 500, "positives": 40}
    metrics = {"version": version, "threshold": 0.7, "threshold_reached": reached, "val": split, "test": split,
               "train_seconds": 12.5, "source": {"snapshot": None}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "model.pt").write_bytes(version.encode() * 100)
    (path / "encoder.json").write_text("{}")
    (path / "config.json").write_text("{}")
    (path / "model_card.md").write_text(f"# model {version}\n")
    return path


def mlflow_registry(root: Path, model_name: str = "identigraph-fraud") -> MlflowRegistry:
    if "db" not in _TEMPLATE:
        template = Path(tempfile.mkdtemp(prefix="identigraph-mlflow-template-"))
        MlflowRegistry.local(template, model_name).list()  # creates and migrates the database
        _TEMPLATE["db"] = template / "registry.db"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE["db"], root / "registry.db")
    return MlflowRegistry.local(root, model_name)


def assert_cli_accepts(commands: list[list[str]], minimum: int = 1) -> None:
    """Each ``identigraph …`` command parses against the real CLI: the command exists and takes every option.

    ``--help`` is appended: click parses the whole line first (an unknown command or option fails there),
    then answers the eager ``--help`` before any value is converted, so placeholders like
    ``$MODEL_VERSION`` or paths that exist only in CI are fine.
    """
    from typer.testing import CliRunner

    from identigraph.cli import app

    assert len(commands) >= minimum, commands
    runner = CliRunner()
    for command in commands:
        assert command[0] == "identigraph", command
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{' '.join(command)}: {result.output[-500:]}"
