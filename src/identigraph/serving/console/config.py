"""``console:`` in ``serving.yaml``: where the review console keeps its cases and how long things last."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from identigraph.config_loader import FrozenModel


class ConsoleConfig(FrozenModel):
    """Off by default in code so that an app built for scoring alone never takes cases off the review queue;
    the shipped ``serving.yaml`` turns it on for ``identigraph serve``."""

    enabled: bool = Field(False, description="serve /review and take cases off queues.review into the store")
    store_file: Path = Field(Path("serving/review-console.sqlite"), description="sqlite file; relative to data_dir")
    claim_ttl_s: float = Field(900.0, gt=0, le=86_400, description="a reviewer's claim on a case lapses after it")
    session_ttl_s: float = Field(8 * 3600.0, gt=0, le=7 * 86_400, description="a console login lasts this long")
    poll_wait_s: int = Field(2, ge=0, le=20, description="SQS long-poll wait of the intake thread")
    block_on_confirm: bool = Field(True, description="confirm_fraud blocks the customer in the graph")
    clear_on_legitimate: bool = Field(True, description="legitimate lifts a block the customer has")
    max_drawn_per_identifier: int = Field(8, ge=1, le=50,
                                          description="customers drawn around one identifier; the rest as a count")
    secure_cookie: bool = Field(False, description="mark the session cookie Secure (behind TLS)")
