"""Output outside a terminal: tables read whole in a log, and no third-party deprecation notice reaches it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
from rich.table import Table

from identigraph.model.baseline import GBDTBaseline
from identigraph.model.config import load_model_config
from identigraph.model.features import FeatureEncoder
from identigraph.terminal import RULE_WIDTH, make_console, stage_rule
from model_graphs import customer, link, make_frame

HEADERS = ["", "n", "positives", "AUROC", "AUPRC", "R@P0.85", "R@P0.90", "P@R0.5", "a much longer last column"]
ROWS = [["rgcn_ablation", "12,345", "678", "0.9123", "0.4567", "0.1234", "0.0987", "0.8765",
         "the whole cell, every word of it"],
        ["gbdt_baseline_with_a_long_name", "12,345", "678", "0.9000", "0.4000", "0.1000", "0.0900", "0.8000", "x"]]


def _wide_table() -> Table:
    table = Table(title="test unblocked vs truth")
    for col in HEADERS:
        table.add_column(col)
    for row in ROWS:
        table.add_row(*row)
    return table


def test_table_reads_whole_outside_a_terminal(capsys):
    console = make_console()  # pytest's captured stdout is not a terminal
    assert not console.is_terminal
    console.print(_wide_table())
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) > 80  # wider than rich's 80-column fallback
    assert "…" not in out and "\x1b[" not in out  # nothing ellipsized, no colour codes
    header = next(line for line in lines if "positives" in line)
    for col in HEADERS[1:]:
        assert col in header, col
    for row in ROWS:
        line = next(line for line in lines if row[0] in line)
        for cell in row:
            assert cell in line, cell


def test_stage_rule_stays_readable_in_a_log(capsys):
    make_console().print(stage_rule("3. historical load"))
    line = capsys.readouterr().out.rstrip("\n")
    assert "3. historical load" in line and len(line) == RULE_WIDTH


def test_stderr_console_follows_redirection(capsys):
    make_console(stderr=True).print("to stderr")
    captured = capsys.readouterr()
    assert captured.err.strip() == "to stderr" and captured.out == ""


def test_baseline_fit_emits_no_deprecation_warning():
    customers = [customer(f"c{i}", days_old=20 + i, blocked=i % 4 == 0) for i in range(40)]
    links = [link(f"c{i}", f"device:d{i // 3}") for i in range(40)] + [link(f"c{i}", f"ip:10.0.0.{i % 7}") for i in range(40)]
    frame = make_frame(customers, links)
    t = FeatureEncoder().fit(frame).transform(frame)
    nodes = t.nodes_of("customer")
    y = (np.arange(len(nodes)) % 4 == 0).astype(float)
    cfg = load_model_config(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)  # LightGBM's LGBMDeprecationWarning is a FutureWarning
        model = GBDTBaseline(cfg).fit(t, nodes[:30], y[:30], nodes[30:], y[30:])
    assert model.predict(t, nodes).shape == (len(nodes),)


def test_importing_the_model_stage_prints_no_warning():
    code = "import identigraph.model.train, identigraph.model.baseline, identigraph.model.pipeline"
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True)
    assert "Warning" not in run.stderr, run.stderr
