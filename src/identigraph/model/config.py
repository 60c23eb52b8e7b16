"""Typed model configuration (``model.yaml``): unknown keys are errors, and errors name the file and the key.

Read like every other configuration (``identigraph.config_loader``): ``--model-config``,
``$IDENTIGRAPH_MODEL_CONFIG`` or the packaged default, then ``IDENTIGRAPH_MODEL__SECTION__KEY`` variables,
then ``--set`` dotted overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from identigraph.config_loader import MODEL, StrictModel, load_config, packaged_default

DEFAULT_PATH = packaged_default(MODEL.default_file)


class NetworkConfig(StrictModel):
    """The relational GCN's size: small by default, because the graph, not depth, carries the signal."""

    hidden: int = Field(64, ge=4, le=1024)
    layers: int = Field(2, ge=1, le=4)
    dropout: float = Field(0.2, ge=0, lt=1)
    edge_gate: Literal["residual", "sigmoid"] = Field("residual", description=(
        "the edge-aware conv's gate: 'residual' starts as the plain RGCN (edge terms zero) so edges only move "
        "a message where they help; 'sigmoid' is the earlier gate, which halves every message at init"))


class TrainingConfig(StrictModel):
    """How the network is trained: early stopping on validation AUPRC, with label and relation dropout."""

    lr: float = Field(0.005, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(150, ge=1)
    patience: int = Field(50, ge=1)
    min_delta: float = Field(0.001, ge=0, description="validation AUPRC gain that counts as better")
    mask_rate: float = Field(0.5, gt=0, le=1)
    relation_dropout: float = Field(0.5, ge=0, lt=1, description=(
        "each (node, relation) loses all its last-layer edges with this probability in a training step: no "
        "single kind of evidence (a shared device) may carry the model alone, or a ring without one is missed"))
    label_dropout: float = Field(0.0, ge=0, lt=1, description=(
        "share of the other target-label nodes whose label-derived inputs are also hidden each step, so the "
        "model learns structure and not only its neighbours' blocks"))
    edge_dropout: float = Field(0.0, ge=0, lt=1, description=(
        "dropout on the edge features the edge-aware conv reads, in training (0: off). 0.5 helped on one hard "
        "world and hurt on another, and failed a behaviour test (bench/RESULTS.md)"))
    ema_decay: float = Field(0.0, ge=0, lt=1, description=(
        "validate and keep an exponential moving average of the weights, updated once per epoch, instead of "
        "the last step's weights (0: off): a full-batch epoch is one noisy step on a random half of the labels. "
        "0.9 moved neither model by more than the seed sd on two hard worlds (bench/RESULTS.md)"))
    max_pos_weight: float = Field(20.0, ge=1)
    full_batch_max_nodes: int = Field(3_000_000, ge=0)
    num_neighbors: list[int] = Field(default_factory=lambda: [15, 10])
    batch_size: int = Field(1024, ge=1)
    predict_chunks: int = Field(4, ge=1)
    amp: bool = True
    seed: int = 7
    threads: int = Field(0, ge=0, description="CPU intra-op threads; 0 = 1 for small graphs, else torch's default")


class BaselineConfig(StrictModel):
    """The GBDT baseline the model must beat on the same features."""

    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(20, ge=1)


class ModelConfig(StrictModel):
    """What to classify, how to split it and how to train: one file travels with every model directory."""

    target_label: str = "customer"
    label_columns: dict[str, list[str]] = Field(default_factory=dict)
    time_property: str | None = "created_at"
    split: Literal["auto", "time", "stratified"] = "auto"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    target_precision: float = Field(0.85, gt=0, lt=1)
    hub_degree: int | None = Field(50, ge=1, description="identifiers with more customers are represented by "
                                   "their statistics (no messages from their customers); also the API's fan-out cap")
    shortcuts: bool = Field(True, description="private identifiers as own_ links read in the last layer, "
                            "and co_ links between customers sharing a small identifier (pairwise edge features)")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)

    @model_validator(mode="after")
    def _fractions(self) -> ModelConfig:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) <= 0:
            raise ValueError("split_fractions must be three positive numbers summing to 1")
        if len(self.training.num_neighbors) != self.network.layers:
            raise ValueError("training.num_neighbors needs one fanout per network layer")
        return self


def load_model_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> ModelConfig:
    """``overrides``: dotted keys (``{"training.epochs": 20}``) that replace what file and environment say."""
    return load_config(MODEL, ModelConfig, path, environ=environ, sets=overrides)
