"""The notebooks run on a tiny world in every test run, so they never rot; the committed ones carry outputs.

One small world is built once (synth → Spark load → labels → a short training run) and each notebook is
executed against it with nbclient, its inputs pointed there through the IDENTIGRAPH_NB_* variables. The
kernel is ipykernel's ``python3``, which ipykernel's wheel installs into this environment's prefix
(``share/jupyter/kernels``) and jupyter_client starts with this interpreter: no ``ipykernel install`` step.
``JUPYTER_PREFER_ENV_PATH=1`` makes that spec win over a ``python3`` spec in the user's own Jupyter
directory, which would otherwise start some other Python without identigraph.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from identigraph.synth import SynthParams, generate_world, write_world

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KEY = b"notebook-test-key-0123456789abcd"
CELL_TIMEOUT_S = 300

# notebook -> cell tag -> what its outputs must hold
EXPECTED = {
    "01_identity_graph.ipynb": {"size-table": ["text/html"], "degree-figure": ["image/png"],
                                "group-drawing": ["image/png"]},
    "02_model_evaluation.ipynb": {"metrics-table": ["text/html"], "pr-curves": ["image/png"],
                                  "threshold-tradeoff": ["image/png"], "threshold-table": ["text/html"]},
    "03_decisions.ipynb": {"explanations": ["text/markdown", "text/html"], "impact-figure": ["image/png"],
                           "decision-table": ["text/html"], "policy-crosstab": ["text/html"]},
}


@pytest.fixture(scope="module")
def tiny_world(spark, settings, tmp_path_factory):
    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import run_train

    root = tmp_path_factory.mktemp("notebooks")
    write_world(generate_world(SynthParams(customers=2000, seed=21)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    run_labeling(spark, root / "snapshot", root / "labels")
    cfg = load_model_config(overrides={"training.epochs": 10})
    run_train(root / "snapshot", root / "model", cfg, labels=root / "labels", log=lambda _: None)
    return root


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _mime_types(cell) -> set[str]:
    return {mime for out in cell.get("outputs", []) for mime in out.get("data", {})}


def _errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        for mime in ("text/plain", "text/html", "text/markdown"):
            parts.append(out.get("data", {}).get(mime, ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_executes_on_a_tiny_world(name, tiny_world, monkeypatch):
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    for var, sub in (("SNAPSHOT", "snapshot"), ("LABELS", "labels"), ("MODEL", "model"), ("WORLD", "world")):
        monkeypatch.setenv(f"IDENTIGRAPH_NB_{var}", str(tiny_world / sub))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:  # start from nothing: the committed outputs must not leak into the check
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert not _errors(nb)
    for tag, mimes in EXPECTED[name].items():
        missing = set(mimes) - _mime_types(_tagged(nb, tag))
        assert not missing, f"{name}: cell {tag!r} produced no {sorted(missing)}"
    if name.startswith("02"):
        table = _text(_tagged(nb, "metrics-table"))
        for scorer in ("model (edge-aware RGCN)", "plain RGCN ablation", "GBDT baseline", "AUPRC"):
            assert scorer in table
        assert "operating point:" in _text(_tagged(nb, "threshold-tradeoff"))
    if name.startswith("03"):
        text = _text(_tagged(nb, "explanations"))
        assert text.count("**decision: ") == 3, text[:2000]
        table = _text(_tagged(nb, "decision-table"))
        assert all(who in table for who in ("ring member", "ATO victim", "household member"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebook_carries_its_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{name}: not executed before commit"
    assert not _errors(nb), f"{name}: committed with errors"
    for tag, mimes in EXPECTED[name].items():
        assert set(mimes) <= _mime_types(_tagged(nb, tag)), f"{name}: committed without the {tag!r} output"
    assert (NOTEBOOKS / name).stat().st_size < 1_000_000, f"{name}: keep committed outputs small"
