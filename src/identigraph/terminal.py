"""The one place the CLI gets its rich consoles, so output reads the same in a terminal and in a log.

Outside a terminal (``make demo > log``, CI, a pipe) rich falls back to 80 columns and folds or
ellipsizes wide tables ("rgcn_abl…", the last column gone). There the console gets a width no table here
comes near, so tables render at their natural width, and no colour codes, so the log is plain text.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.constrain import Constrain
from rich.rule import Rule

# wider than any table or message the CLI prints: rich renders tables at their natural width, so this
# only removes the fold, it pads nothing
LOG_WIDTH = 1000
# a stage heading spans the terminal, but no more than this: in a log a rule 1000 dashes wide reads badly
RULE_WIDTH = 120


def _is_terminal(stderr: bool) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(stderr: bool = False) -> Console:
    """A console that is rich in a terminal and plain, unfolded text in a log or pipe."""
    if _is_terminal(stderr):
        return Console(stderr=stderr)
    # no file= : rich resolves sys.stdout/sys.stderr when it writes, so redirections made after this
    # (pytest's capture, typer's CliRunner) still receive the output
    return Console(stderr=stderr, width=LOG_WIDTH, color_system=None, highlight=False)


def stage_rule(title: str) -> Constrain:
    """A stage heading as wide as the terminal, capped at ``RULE_WIDTH`` (a log console is far wider)."""
    return Constrain(Rule(title), width=RULE_WIDTH)
