"""The `etl` install: what the Spark jobs import, and nothing of the model, serving or lifecycle stacks."""

import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torch_geometric", "lightgbm", "sklearn", "mlflow", "sagemaker", "optuna", "fastapi", "uvicorn")


def test_core_dependencies_carry_no_model_stack_and_no_pyspark():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].split("<")[0].lower() for d in project["dependencies"]]
    assert not [n for n in names if n.replace("-", "_") in HEAVY or n == "pyspark"]
    extras = project["optional-dependencies"]
    assert extras["etl"] == [] and any(d.startswith("pyspark") for d in extras["spark"])


def test_the_spark_jobs_and_the_cli_import_nothing_heavy():
    code = ("import sys, identigraph.etl.job, identigraph.labeling.job, identigraph.etl.graph_load, "
            f"identigraph.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""
