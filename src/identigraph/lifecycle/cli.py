"""``identigraph model …``, ``identigraph sagemaker …`` and ``identigraph tune``: registered by identigraph.cli.

Heavy imports (MLflow, the SageMaker SDK, Optuna, torch) happen inside the commands, so ``identigraph
--help`` and every other command stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from identigraph.terminal import make_console

console = make_console()
err = make_console(stderr=True)

model_app = typer.Typer(no_args_is_help=True, help="Model registry: register behind the bar, approve, promote.")
sagemaker_app = typer.Typer(no_args_is_help=True, help="SageMaker: the model-build pipeline and training jobs.")

_LC = typer.Option(None, "--lifecycle-config", exists=True, dir_okay=False,
                   help="lifecycle YAML (default: $IDENTIGRAPH_LIFECYCLE_CONFIG or the packaged lifecycle.yaml)")
_BACKEND = typer.Option(None, "--backend", help="mlflow | sagemaker (default: registry.backend)")
_BY = typer.Option(None, "--by", help="who decides (default: the OS user)")
_SNAP = typer.Option(None, "--snapshot", exists=True, file_okay=False,
                     help="graph snapshot for the behaviour checks (default: config, else the model's own)")
_URL = typer.Option(None, "--staging-url", help="staging API (default: promotion.staging_check.staging_url)")


def _lifecycle(ctx: typer.Context, config: Path | None, backend: str | None):
    from identigraph.config import SettingsFile
    from identigraph.lifecycle.config import load_lifecycle_config
    from identigraph.lifecycle.flow import Lifecycle

    settings = ctx.ensure_object(SettingsFile).load()  # the global --config, put there by identigraph.cli
    return Lifecycle.from_config(load_lifecycle_config(config), settings.data_path, backend, log=err.print)


def _checks(checks: list[dict[str, Any]], title: str) -> None:
    table = Table("", "check", "detail", title=title)
    for c in checks:
        table.add_row("[green]ok[/]" if c["ok"] else "[red]no[/]", c["check"], c["detail"])
    console.print(table)


def _refused(exc: Exception, title: str) -> None:
    from identigraph.lifecycle.flow import Refused

    if isinstance(exc, Refused):
        _checks(exc.verdict.checks, title)
    raise exc


def _versions(rows: list) -> None:
    table = Table("version", "model", "status", "stages", "test AUPRC", "test R@P0.85", "registered")
    for mv in rows:
        m = mv.metrics
        table.add_row(mv.version, mv.model_version, mv.status, ", ".join(mv.stages) or "-",
                      f"{m.get('test.auprc', float('nan')):.4f}", f"{m.get('test.recall_at_p85', float('nan')):.4f}",
                      mv.created_at)
    console.print(table)


@model_app.command("register")
def register_cmd(ctx: typer.Context, model_dir: Path = typer.Argument(..., exists=True, file_okay=False),
                 description: str = typer.Option("", "--description"),
                 lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """Register MODEL_DIR (pending approval) only if it clears the bar and is not worse than production."""
    lc = _lifecycle(ctx, lifecycle_config, backend)
    try:
        mv, verdict = lc.register(model_dir, description)
    except Exception as exc:
        _refused(exc, f"registration bar: {model_dir}")
    _checks(verdict.checks, f"registration bar: {model_dir}")
    console.print(f"registered version [bold]{mv.version}[/] (model {mv.model_version}) in {lc.registry.name}: "
                  f"{mv.status}")


@model_app.command("gate")
def gate_cmd(ctx: typer.Context, model_dir: Path = typer.Argument(..., exists=True, file_okay=False),
             lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """Only check MODEL_DIR against the registration bar (exit 1 if it would be refused)."""
    verdict = _lifecycle(ctx, lifecycle_config, backend).gate(model_dir)
    _checks(verdict.checks, f"registration bar: {model_dir}")
    if not verdict.ok:
        raise typer.Exit(1)


@model_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"), lifecycle_config: Path | None = _LC,
             backend: str | None = _BACKEND) -> None:
    """Registered versions with status, stages and hold-out figures."""
    rows = _lifecycle(ctx, lifecycle_config, backend).registry.list()
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in rows]))
    else:
        _versions(rows)


@model_app.command("approve")
def approve_cmd(ctx: typer.Context, version: str, by: str | None = _BY, note: str = typer.Option("", "--note"),
                lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """Approve a registered version (a person's decision; it can then be promoted)."""
    mv = _lifecycle(ctx, lifecycle_config, backend).approve(version, by, note)
    console.print(f"version {mv.version} (model {mv.model_version}): {mv.status}")


@model_app.command("reject")
def reject_cmd(ctx: typer.Context, version: str, reason: str = typer.Option(..., "--reason", help="why (kept in the registry)"),
               by: str | None = _BY, lifecycle_config: Path | None = _LC,
               backend: str | None = _BACKEND) -> None:
    """Reject a registered version (it can no longer be promoted)."""
    mv = _lifecycle(ctx, lifecycle_config, backend).reject(version, by, reason)
    console.print(f"version {mv.version} (model {mv.model_version}): {mv.status}")


@model_app.command("promote")
def promote_cmd(ctx: typer.Context, version: str, to: str = typer.Option(..., "--to", help="staging | production"),
                staging_url: str | None = _URL, snapshot: Path | None = _SNAP,
                lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """Deploy an approved version to a stage; production also needs it in staging and the staging check."""
    lc = _lifecycle(ctx, lifecycle_config, backend)
    try:
        mv, report = lc.promote(version, to, staging_url, snapshot)
    except Exception as exc:
        _refused(exc, f"promotion of version {version} to {to}")
    if "staging_check" in report:
        _checks(report["staging_check"]["checks"], "staging check")
    console.print(f"version {mv.version} (model {mv.model_version}) is now {to}: {report['deployed']}")


@model_app.command("check")
def check_cmd(ctx: typer.Context, version: str, staging_url: str | None = _URL, snapshot: Path | None = _SNAP,
              lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """The staging check alone: behaviour scenarios + latency against the staging API (exit 1 on failure)."""
    verdict, figures = _lifecycle(ctx, lifecycle_config, backend).check(version, staging_url, snapshot)
    _checks(verdict.checks, f"staging check of version {version}")
    if figures.get("latency"):
        console.print_json(json.dumps(figures["latency"]))
    if not verdict.ok:
        raise typer.Exit(1)


@model_app.command("status")
def status_cmd(ctx: typer.Context, lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """What each stage's deployment serves, and what the registry marks."""
    lc = _lifecycle(ctx, lifecycle_config, backend)
    table = Table("stage", "registry version", "registry model", "deployed model", "path")
    for stage, deployed in lc.deploy.status().items():
        mv = lc.registry.current(stage)
        table.add_row(stage, mv.version if mv else "-", mv.model_version if mv else "-", deployed or "-",
                      str(lc.deploy.path(stage)))
    console.print(table)


@model_app.command("sync")
def sync_cmd(ctx: typer.Context, lifecycle_config: Path | None = _LC, backend: str | None = _BACKEND) -> None:
    """Point each stage's deployment at the version the registry marks (new serving host, lost volume)."""
    for stage, version in _lifecycle(ctx, lifecycle_config, backend).sync().items():
        console.print(f"{stage}: {version or 'nothing marked'}")


def _sagemaker_config(lifecycle_config: Path | None, **given: str | None):
    from identigraph.lifecycle.config import load_lifecycle_config

    return load_lifecycle_config(lifecycle_config, {f"sagemaker.{k}": v for k, v in given.items() if v})


def _instance(snapshot: Path | None, instance_type: str | None, sets: list[str] | None):
    from identigraph.lifecycle.sagemaker_jobs import Instance, instance_for

    if instance_type:
        return Instance(instance_type, 1, 0, "given with --instance-type")
    if snapshot is None:
        return Instance("ml.g5.xlarge", 1, 24, "not sized (no --snapshot): the smallest GPU instance")
    from identigraph.config_loader import parse_sets
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import estimate

    est = estimate(snapshot, load_model_config(None, parse_sets(sets)))
    inst = instance_for(est)
    err.print(f"sized from {snapshot}: {est['nodes']:,} nodes, {est['directed_edges']:,} edges, peak "
              f"{est['peak_memory_gib']:.2f} GiB → {inst.type} ({inst.why})")
    return inst


_ROLE = typer.Option(None, "--role-arn", help="default: sagemaker.role_arn")
_IMAGE = typer.Option(None, "--image-uri", help="default: sagemaker.image_uri")
_S3 = typer.Option(None, "--s3-uri", help="default: sagemaker.s3_uri")
_ITYPE = typer.Option(None, "--instance-type", help="training instance (default: sized by train --estimate)")
_SET = typer.Option(None, "--set", help="model config override for training, e.g. training.epochs=80")


@sagemaker_app.command("pipeline")
def pipeline_cmd(out: Path | None = typer.Option(None, "--out", help="write the definition JSON here"),
                 snapshot: Path | None = typer.Option(None, "--snapshot", exists=True, file_okay=False,
                                                         help="representative snapshot to size the GPU instance"),
                 instance_type: str | None = _ITYPE,
                 target: str | None = typer.Option(None, "--target", help="train on LABEL.PROPERTY, no labeling"),
                 upsert: bool = typer.Option(False, "--upsert", help="create or update the pipeline in SageMaker"),
                 role_arn: str | None = _ROLE, image_uri: str | None = _IMAGE, s3_uri: str | None = _S3,
                 lifecycle_config: Path | None = _LC) -> None:
    """Emit the SageMaker Pipelines definition: prepare → train (GPU) → evaluate → quality bar → register."""
    from identigraph.lifecycle.sagemaker_pipeline import build_pipeline, pipeline_session

    cfg = _sagemaker_config(lifecycle_config, role_arn=role_arn, image_uri=image_uri, s3_uri=s3_uri)
    pipeline = build_pipeline(cfg, _instance(snapshot, instance_type, None), pipeline_session(cfg.sagemaker.region),
                              target)
    text = json.dumps(json.loads(pipeline.definition()), indent=2)
    if out:
        out.write_text(text)
        err.print(f"wrote {out}")
    else:
        console.print(text, markup=False, highlight=False)
    if upsert:
        arn = pipeline.upsert(role_arn=cfg.sagemaker.role_arn)["PipelineArn"]
        err.print(f"pipeline {arn}")


@sagemaker_app.command("train")
def sagemaker_train_cmd(
    snapshot: Path = typer.Option(..., "--snapshot", exists=True, file_okay=False,
                                  help="local snapshot: sizes the instance, then uploaded"),
    labels: Path | None = typer.Option(None, "--labels", exists=True, file_okay=False),
    target: str | None = typer.Option(None, "--target"),
    instance_type: str | None = _ITYPE, sets: list[str] | None = _SET,
    job_name: str | None = typer.Option(None, "--job-name"),
    wait: bool = typer.Option(False, "--wait", help="poll until the job ends"),
    role_arn: str | None = _ROLE, image_uri: str | None = _IMAGE, s3_uri: str | None = _S3,
    lifecycle_config: Path | None = _LC,
) -> None:
    """Launch one SageMaker training job of `identigraph train` on a GPU instance sized for the snapshot."""
    import time

    import boto3

    from identigraph.etl.neptune_bulk import upload_snapshot
    from identigraph.lifecycle.sagemaker_jobs import launch_training, training_job_request, upload_dir

    cfg = _sagemaker_config(lifecycle_config, role_arn=role_arn, image_uri=image_uri, s3_uri=s3_uri).sagemaker
    cfg.need("role_arn", "image_uri", "s3_uri")
    instance = _instance(snapshot, instance_type, sets)
    name = job_name or f"identigraph-train-{time.strftime('%Y%m%d-%H%M%S')}"
    run = f"{cfg.s3_uri.rstrip('/')}/jobs/{name}"
    s3 = boto3.client("s3", region_name=cfg.region)
    snapshot_s3, _ = upload_snapshot(s3, snapshot, f"{run}/snapshot")  # under its run id: the job reads there
    labels_s3 = upload_dir(s3, labels, f"{run}/labels") if labels else None
    request = training_job_request(name, cfg, instance, f"{snapshot_s3}/", labels_s3, target, f"{run}/output",
                                   sets)
    result = launch_training(boto3.client("sagemaker", region_name=cfg.region), request, wait=wait)
    console.print_json(json.dumps(result, default=str))


def tune_cmd(
    snapshot: Path = typer.Option(..., "--snapshot", exists=True, file_okay=False),
    out: Path = typer.Option(..., "--out", help="model directory for the best configuration (tables beside it)"),
    labels: Path | None = typer.Option(None, "--labels", exists=True, file_okay=False),
    target: str | None = typer.Option(None, "--target", help="LABEL.PROPERTY, e.g. customer.blocked"),
    trials: int | None = typer.Option(None, "--trials", min=1),
    max_epochs: int | None = typer.Option(None, "--max-epochs", min=2),
    time_objective: bool = typer.Option(False, "--time-objective",
                                        help="second objective: training seconds (Pareto front, no pruning)"),
    device: str = typer.Option("cpu", "--device"),
    tune_config: Path | None = typer.Option(None, "--tune-config", exists=True, dir_okay=False,
                                               help="search space and budget (default: $IDENTIGRAPH_TUNE_CONFIG or the packaged tune.yaml)"),
    model_config: Path | None = typer.Option(None, "--model-config", help="base model YAML"),
    sets: list[str] | None = _SET,
) -> None:
    """Multi-fidelity search (Optuna, Hyperband pruning on per-epoch validation AUPRC); trains the best."""
    from identigraph.config_loader import parse_sets
    from identigraph.lifecycle.config import load_tune_config
    from identigraph.lifecycle.tune import run_tune
    from identigraph.model.config import load_model_config

    if (labels is None) == (target is None):
        raise typer.BadParameter("give exactly one of --labels or --target")
    overrides: dict[str, Any] = {k: v for k, v in (("trials", trials), ("max_epochs", max_epochs)) if v}
    if time_objective:
        overrides["second_objective"] = "train_seconds"
    tcfg = load_tune_config(tune_config, overrides)
    result, metrics = run_tune(snapshot, out, load_model_config(model_config, parse_sets(sets)), tcfg, labels, target, device,
                               log=err.print)
    s = result.summary()
    console.print(f"{s['trials']} trials, {s['pruned']} pruned, {s['epochs_trained']} epochs in {s['seconds']} s; "
                  f"best {tcfg.objective} {s['best_value']:.4f}; test AUPRC {metrics['test']['auprc']:.4f}, "
                  f"R@P0.85 {metrics['test']['recall_at_p85']:.4f} → {out} (tuning.json, tuning_trials.csv, "
                  f"best_model_config.yaml)")


def register_commands(app: typer.Typer) -> None:
    """Called by identigraph.cli, so this module never imports the entry module (no import cycle)."""
    app.add_typer(model_app, name="model")
    app.add_typer(sagemaker_app, name="sagemaker")
    app.command("tune")(tune_cmd)
