"""identigraph: an identity graph of customers and the identifiers they share, scored for fraud."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from identigraph.config import Settings, SettingsFile
from identigraph.errors import IdentigraphError
from identigraph.terminal import make_console

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
services_app = typer.Typer(no_args_is_help=True, help="Local Gremlin Server and ElasticMQ.")
graph_app = typer.Typer(no_args_is_help=True, help="The identity graph: counts, reads, loads, admin.")
config_app = typer.Typer(no_args_is_help=True, help="The resolved configuration.")
stream_app = typer.Typer(no_args_is_help=True, help="The event stream (SQS / ElasticMQ).")
dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue, one entry per source message (a crash "
                      "between a DLQ send and its delete can put one there twice).")
app.add_typer(services_app, name="services")
app.add_typer(graph_app, name="graph")
app.add_typer(config_app, name="config")
app.add_typer(stream_app, name="stream")
app.add_typer(dlq_app, name="dlq")

console = make_console()
err = make_console(stderr=True)


def settings(ctx: typer.Context) -> Settings:
    """The settings the global ``--config`` names, loaded when a command needs them (not for ``--help``)."""
    return ctx.ensure_object(SettingsFile).load()


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="settings YAML (default: $IDENTIGRAPH_CONFIG "
                                          "or the packaged identigraph.yaml); IDENTIGRAPH__SECTION__KEY env vars "
                                          "override it."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log retries and other details"),
) -> None:
    """Global options: the settings file goes on the context, where every command finds it."""
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False)])
    for job in ("identigraph.etl.job", "identigraph.etl.graph_load", "identigraph.labeling.job"):
        logging.getLogger(job).setLevel(logging.INFO)  # the jobs' progress lines show without -v, as before
    ctx.obj = SettingsFile(config)


def run() -> None:
    """Console entry: typed errors become one clear message and exit code 2."""
    try:
        rc = app(standalone_mode=False)  # in this mode click returns typer.Exit's code instead of exiting
        sys.exit(rc if isinstance(rc, int) else 0)
    except IdentigraphError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _service_table(reports: list) -> Table:
    table = Table("service", "state", "host:port", "pid", "log")
    for r in reports:
        table.add_row(r.name, r.detail, f"{r.host}:{r.port}" if r.port else "-", str(r.pid or "-"), r.log or "-")
    return table


@services_app.command("install")
def services_install(ctx: typer.Context) -> None:
    """Fetch Gremlin Server and ElasticMQ from Maven Central into the cache (idempotent)."""
    from identigraph.services import artifacts

    for key, value in artifacts.install(settings(ctx)).items():
        console.print(f"{key}: {value}")


@services_app.command("up")
def services_up(ctx: typer.Context, names: list[str] | None = typer.Argument(None, help="gremlin-server, elasticmq (default both)")) -> None:
    """Start the local services (idempotent); waits until each answers a real request."""
    from identigraph.services import local

    console.print(_service_table(local.up(settings(ctx), names)))


@services_app.command("down")
def services_down(ctx: typer.Context, names: list[str] | None = typer.Argument(None)) -> None:
    """Stop the local services; Gremlin Server writes its graph to the data directory on the way down."""
    from identigraph.services import local

    console.print(_service_table(local.down(settings(ctx), names)))


@services_app.command("status")
def services_status(ctx: typer.Context, names: list[str] | None = typer.Argument(None)) -> None:
    """Each local service's state (exit 1 unless all run): what scripts wait on."""
    from identigraph.services import local

    reports = local.status(settings(ctx), names)
    console.print(_service_table(reports))
    if not all(r.running for r in reports):
        raise typer.Exit(1)


@services_app.command("logs")
def services_logs(ctx: typer.Context, name: str = typer.Argument(..., help="gremlin-server or elasticmq"),
                  lines: int = typer.Option(50, "--lines", "-n")) -> None:
    """The last lines of a service's log: where a failed start says why."""
    from identigraph.services import local

    console.print(local.logs(settings(ctx), name, lines), markup=False, highlight=False)


def _client(ctx: typer.Context):
    from identigraph.graph.client import GraphClient

    return GraphClient(settings(ctx))


@graph_app.command("counts")
def graph_counts(ctx: typer.Context) -> None:
    """Vertices and edges per label."""
    from identigraph.graph import queries

    with _client(ctx) as client:
        console.print_json(json.dumps(queries.counts(client)))


@graph_app.command("clear")
def graph_clear(ctx: typer.Context, yes: bool = typer.Option(False, "--yes", help="Required: this deletes the whole graph.")) -> None:
    """Empty the configured graph (refuses without --yes, and refuses Neptune unless the config allows it)."""
    from identigraph.graph import queries

    if not yes:
        err.print("refusing to clear the graph without --yes")
        raise typer.Exit(2)
    with _client(ctx) as client:
        console.print(f"dropped {queries.clear(client)} vertices (and their edges)")


@graph_app.command("identity")
def graph_identity(ctx: typer.Context, customer_id: str) -> None:
    """A customer's identifiers (emails and phones pseudonymised) with first/last seen and counts."""
    from identigraph.graph import queries

    with _client(ctx) as client:
        console.print_json(json.dumps(queries.customer_identity(client, customer_id), default=str))


@app.command("etl")
def etl(
    ctx: typer.Context,
    input_dir: str | None = typer.Option(None, "--input", help="folder (path or URI: s3a://, s3://) of the input contract's files"),
    input_table: list[str] | None = typer.Option(None, "--input-table", help="Hive: a database, or db.table / "
                                                    "NAME=db.table per contract table (repeat)"),
    snapshot_dir: str = typer.Option(..., "--snapshot", help="snapshot location (path or URI): versioned runs + LATEST"),
    as_of: str | None = typer.Option(None, "--as-of", help="ISO-8601 cut-off (default: latest valid event)"),
    incremental: bool = typer.Option(False, "--incremental", help="merge only what is newer than the published "
                                     "watermark into the published run (a full load when nothing is published)"),
    load_graph: bool = typer.Option(False, "--load-graph", help="then load the snapshot into the configured graph"),
    overwrite: bool = typer.Option(False, "--overwrite", help="a full load into a location that holds something"),
) -> None:
    """Historical load (Spark): validate the tables, build the graph snapshot (Neptune CSV), optionally load it."""
    from identigraph.etl.job import run_job

    err.print(f"[bold]etl[/] {input_dir or ', '.join(input_table or [])} → {snapshot_dir}")
    run_job(settings(ctx), input_dir, snapshot_dir, as_of, load_graph, overwrite, console=err, summary_console=console,
            incremental=incremental, input_tables=input_table or None)


@app.command("label")
def label(
    ctx: typer.Context,
    snapshot_dir: str = typer.Option(..., "--snapshot", help="graph snapshot location (etl output; path or URI)"),
    out: str = typer.Option(..., "--out", help="output folder (path or URI): labels.csv and report.json"),
    as_of: str | None = typer.Option(None, "--as-of", help="ISO-8601 (default and latest: the snapshot's as-of)"),
    labeling_config: Path | None = typer.Option(None, "--labeling-config", exists=True, dir_okay=False,
                                                help="labeling policy: windows and rules (default: "
                                                     "$IDENTIGRAPH_LABELING_CONFIG or the packaged labeling.yaml)"),
    old_config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False, hidden=True,
                                           help="deprecated: --labeling-config"),
    truth: Path | None = typer.Option(None, "--truth", exists=True, dir_okay=False,
                                         help="ground truth (synthetic truth.csv): adds precision/recall to the report"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    verdicts: Path | None = typer.Option(None, "--verdicts", exists=True, dir_okay=False,
                                            help="the review console's store (sqlite): reviewers' verdicts "
                                                 "override maturity and correction"),
) -> None:
    """Training labels (Spark): label maturity, then heuristic correction of uncaught fraud, with evidence."""
    from identigraph.labeling.job import run_job as run_labeling_job

    if old_config is not None:  # `label --config` read like the global --config (settings), so it was renamed
        err.print("[yellow]warning:[/] `label --config` is deprecated: use --labeling-config")
        labeling_config = labeling_config or old_config
    err.print(f"[bold]label[/] {snapshot_dir} → {out}")
    run_labeling_job(settings(ctx), snapshot_dir, out, as_of, labeling_config, truth, overwrite, console=err, summary_console=console,
                     verdicts=verdicts)


@graph_app.command("load")
def graph_load(ctx: typer.Context, snapshot_dir: str = typer.Option(..., "--snapshot", help="snapshot location or Gremlin CSV folder (path or URI)")) -> None:
    """Load a snapshot (ours or anyone's in the same format) into the configured graph with batched upserts."""
    from identigraph.etl.graph_load import load_and_report
    from identigraph.etl.spark import session

    cfg = settings(ctx)
    load_and_report(session(cfg), cfg, snapshot_dir, console)


@graph_app.command("export")
def graph_export(
    ctx: typer.Context,
    snapshot_dir: Path = typer.Option(..., "--snapshot", help="output directory"),
    page: int = typer.Option(10_000, "--page", help="elements fetched per request"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write the current graph to the snapshot format (Neptune CSV), paging through the server."""
    from identigraph.etl.export import export_snapshot

    with _client(ctx) as client:
        summary = export_snapshot(client, snapshot_dir, page=page, overwrite=overwrite)
    console.print_json(json.dumps(summary))


@app.command("neptune-load")
def neptune_load(
    ctx: typer.Context,
    snapshot_dir: str = typer.Option(..., "--snapshot", help="snapshot location: s3://… is loaded in place, a local one uploaded"),
    s3_uri: str | None = typer.Option(None, "--s3", help="s3://bucket/prefix to upload a local snapshot under (one "
                                         "fresh prefix per run)"),
    iam_role_arn: str = typer.Option(..., "--iam-role-arn", help="role Neptune assumes to read the bucket"),
) -> None:
    """Bulk-load the published run into Neptune (vertices, then edges); never replaces values the graph holds."""
    import boto3

    from identigraph.etl.neptune_bulk import bulk_load

    cfg = settings(ctx)
    if cfg.graph.kind != "neptune":
        err.print("neptune-load needs graph.kind: neptune (and graph.host, graph.region) in the config")
        raise typer.Exit(2)
    region = cfg.graph.region or cfg.queues.region
    neptune = boto3.client("neptunedata", region_name=region,
                           endpoint_url=f"https://{cfg.graph_host}:{cfg.graph_port}")
    result = bulk_load(boto3.client("s3", region_name=region), neptune, snapshot_dir, s3_uri, iam_role_arn, region)
    console.print_json(json.dumps(result, default=str))


@app.command("consume")
def consume(
    ctx: typer.Context,
    until_empty: bool = typer.Option(False, "--until-empty", help="stop when the queue has nothing left"),
    max_messages: int | None = typer.Option(None, "--max-messages", min=1),
    latency_log: Path | None = typer.Option(None, "--latency-log",
                                               help="append 'sent_ms commit_ms' per event (benchmarks)"),
) -> None:
    """Run the stream consumer: SQS events into the graph, exactly once in effect (SIGTERM drains)."""
    import dataclasses

    from identigraph.etl.consumer import Consumer, prepare_process, serve_health

    cfg = settings(ctx)
    prepare_process()
    consumer = Consumer(cfg)
    consumer.install_signal_handlers()
    server = serve_health(consumer, cfg.stream.health_port) if cfg.stream.health_port else None
    if latency_log:
        consumer.latency_log = open(latency_log, "a")  # noqa: SIM115 — closed in the finally below, with the consumer
    try:
        stats = consumer.run(until_empty=until_empty, max_messages=max_messages)
    finally:
        if server:
            server.shutdown()
        consumer.client.close()
        if consumer.latency_log:
            consumer.latency_log.close()
    console.print_json(json.dumps(dataclasses.asdict(stats)))


@stream_app.command("publish")
def stream_publish(
    ctx: typer.Context,
    events: Path = typer.Option(..., "--events", exists=True, dir_okay=False, help="JSONL, one message body a line"),
    rate: float | None = typer.Option(None, "--rate", min=0.1, help="events per second (default: as fast as possible)"),
    pack: int = typer.Option(1, "--pack", min=1, max=1000, help="events per SQS message ({\"events\": [...]}, "
                             "at most 256 KB); a line that is not JSON is always sent alone"),
) -> None:
    """Replay a JSONL stream into the events queue (lines are sent as they are, poison included)."""
    from identigraph.etl.publish import publish_file

    report = publish_file(settings(ctx), events, rate=rate, events_per_message=pack)
    console.print(f"sent {report.events:,} events in {report.sent:,} messages in {report.seconds:.1f}s "
                  f"({report.events / report.seconds if report.seconds else 0:,.0f} events/s), "
                  f"{report.resent} re-sent")


_HOLD_S = typer.Option(120, "--hold-s", min=10, max=43200, help="visibility timeout the read holds every DLQ "
                      "message for (it reads for at most half of it)")


def _dlq(ctx: typer.Context) -> tuple[Any, str, str]:
    """The SQS client, the events queue's URL and the DLQ's."""
    from identigraph.etl.dead_letters import queue_urls
    from identigraph.etl.publish import sqs_client

    cfg = settings(ctx)
    sqs = sqs_client(cfg)
    return (sqs, *queue_urls(cfg, sqs))


@dlq_app.command("list")
def dlq_list(ctx: typer.Context, hold_s: int = _HOLD_S) -> None:
    """One JSON line per distinct source message, then a summary line; deletes nothing.

    A line: source_message_id, kind, reason (cut), copies, event_id; never the body (personal data)."""
    from identigraph.etl import dead_letters

    sqs, _, dlq = _dlq(ctx)
    listing = dead_letters.read(sqs, dlq, hold_s)
    dead_letters.release(sqs, dlq, listing.letters)
    for row in dead_letters.entries(listing):
        typer.echo(json.dumps(row))
    typer.echo(json.dumps({"summary": dead_letters.summary(listing)}))


@dlq_app.command("compact")
def dlq_compact(ctx: typer.Context, hold_s: int = _HOLD_S) -> None:
    """Delete the extra copies of each source message, keeping one (safe to re-run or to kill)."""
    from identigraph.etl import dead_letters

    sqs, _, dlq = _dlq(ctx)
    typer.echo(json.dumps(dead_letters.compact(sqs, dlq, hold_s)))


@dlq_app.command("redrive")
def dlq_redrive(ctx: typer.Context, hold_s: int = _HOLD_S,
                kind: list[str] | None = typer.Option(None, "--kind", help=(
                    "only messages dead-lettered with this kind (poison, refused, conflict, floor); "
                    "repeat for several; default: all"))) -> None:
    """Send each distinct source message back to the events queue once, then delete its copies.

    A re-run after a crash may send one again: the consumer de-duplicates by event id."""
    from identigraph.etl import dead_letters

    sqs, events, dlq = _dlq(ctx)
    typer.echo(json.dumps(dead_letters.redrive(sqs, dlq, events, hold_s, set(kind) if kind else None)))


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="output directory (must be empty or absent)"),
    customers: int = typer.Option(20_000, "--customers"),
    seed: int = typer.Option(7, "--seed"),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv | csv.gz"),
    profile: str = typer.Option("classic", "--profile", help="classic | hard (soft rings, stealth takeovers, "
                                "wrong blocks and unblocks, drift; see identigraph.synth.params.PROFILES)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write a synthetic identity world in the input contract, plus its ground truth."""
    import time

    from identigraph.synth import SynthParams, generate_world, write_world

    t0 = time.perf_counter()
    params = SynthParams.profile(profile, customers=customers, seed=seed)
    world = generate_world(params)
    summary = write_world(world, out, fmt=fmt, overwrite=overwrite)
    console.print_json(json.dumps(summary, default=str))
    console.print(f"wrote {out} in {time.perf_counter() - t0:.1f}s")


def _register_model_commands() -> None:
    from identigraph.model import cli as model_cli

    app.command("train")(model_cli.train_cmd)
    app.command("predict")(model_cli.predict_cmd)
    app.command("evaluate")(model_cli.evaluate_cmd)


_register_model_commands()

from identigraph.lifecycle.cli import register_commands as _register_lifecycle_commands  # noqa: E402

_register_lifecycle_commands(app)  # model (registry), sagemaker, tune


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """The resolved configuration (file + environment), secrets masked."""
    cfg = settings(ctx)
    data = cfg.model_dump(mode="json")
    if data["pii"].get("key"):
        data["pii"]["key"] = "***"
    console.print_json(json.dumps(data))


@app.command("serve")
def serve(
    ctx: typer.Context,
    model_dir: Path | None = typer.Option(None, "--model", exists=True, file_okay=False,
                                             help="MODEL_DIR to serve (without one every decision is a degraded review)"),
    serving_config: Path | None = typer.Option(None, "--serving-config", exists=True, dir_okay=False,
                                                  help="keys, policy, caps (default: $IDENTIGRAPH_SERVING_CONFIG "
                                                       "or the packaged serving.yaml)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="8080 is what SageMaker hosting calls"),
    workers: int = typer.Option(1, "--workers", min=1, help="server processes (each loads the model)"),
    access_log: bool = typer.Option(False, "--access-log", help="one JSON line per request on stderr"),
) -> None:
    """The scoring and identity API (FastAPI): neighbourhood from the graph, model in-process, policy, audit."""
    from identigraph.serving.app import run_server

    settings_file = ctx.ensure_object(SettingsFile)

    run_server(settings_file.path, serving_config, model_dir, host, port, workers, access_log)


@app.command("demo")
def demo(
    ctx: typer.Context,
    customers: int = typer.Option(20_000, "--customers"),
    keep_running: bool = typer.Option(False, "--keep-running",
                                      help="serve the API and review console until Ctrl-C; leave the services up"),
) -> None:
    """The whole pipeline on a synthetic world: services, Spark load, labels, stream, train, evaluate, API, review."""
    from identigraph.demo import run_demo

    run_demo(settings(ctx), customers=customers, keep_running=keep_running, console=console)
