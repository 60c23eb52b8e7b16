"""Neptune's bulk loader for historical loads: a published snapshot run → ``neptunedata.start_loader_job``.

Far faster than any client-side upsert for a first load (Neptune ingests the CSV in parallel on the
cluster). The loader is pointed at one run's own prefix (``snapshot.resolve`` follows ``LATEST``), so it
never reads files of another run:

- a snapshot already in S3 is loaded where it is (no upload); its folders must hold exactly the files its
  manifest lists, or the load is refused;
- a local snapshot is uploaded (in parallel) to a fresh prefix named after its run, refused if that prefix
  holds anything.

Vertex folders load first; the edge jobs are queued behind them with ``dependencies`` so no edge meets a
missing endpoint. ``updateSingleCardinalityProperties`` stays FALSE: the loader never replaces a value
the graph already holds, so an older snapshot cannot roll back the ``last_seen`` or counts the stream
wrote since (Neptune reports such rows as insert errors, counted in the result, and keeps the graph's
value). To bring a live graph up to a newer snapshot use ``identigraph graph load``, whose upserts keep
the earliest first_seen, the latest last_seen and the larger counts.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from identigraph.errors import GraphError, SchemaError
from identigraph.etl import fs as fsys
from identigraph.etl import snapshot

DONE = "LOAD_COMPLETED"
RUNNING = {"LOAD_NOT_STARTED", "LOAD_IN_PROGRESS", "LOAD_IN_QUEUE"}
UPLOAD_THREADS = 8


def parse_s3(uri: str) -> tuple[str, str]:
    """The loader and boto3 need bucket and key apart, and anything but an S3 URI would fail late inside Neptune."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise SchemaError(f"s3: expected s3://bucket/prefix, got {uri!r}")
    return parsed.netloc, parsed.path.strip("/")


def _neptune_uri(uri: str) -> str:
    """Neptune reads ``s3://`` URIs; Spark may have written the same objects as ``s3a://``."""
    bucket, key = parse_s3(uri)
    return f"s3://{bucket}/{key}".rstrip("/")


def _folders(files: list[snapshot.GraphFile], prefix: str) -> dict[str, str]:
    """Top-level folder → kind. Each folder is one loader source, so it must hold one kind of file."""
    kinds: dict[str, str] = {}
    for f in files:
        rel = fsys.relative(prefix, f.uri)
        if "/" not in rel:
            raise SchemaError(f"{f.uri}: graph files must sit in folders (e.g. vertices/, edges/) to be loaded")
        top = rel.split("/", 1)[0]
        if kinds.setdefault(top, f.kind) != f.kind:
            raise SchemaError(f"{top}/: holds both vertex and edge files; the loader needs them apart")
    return kinds


def _check_matches_manifest(fs: fsys.FS, resolved: snapshot.Resolved, folders: list[str]) -> None:
    if resolved.manifest is None:
        return
    listed = {f["path"] for f in resolved.manifest.get("files", [])
              if f["path"].split("/", 1)[0] in folders}
    present = {fsys.relative(resolved.prefix, e.uri) for top in folders
               for e in fs.list(fsys.join(resolved.prefix, top), recursive=True) if not e.is_dir}
    if listed != present:
        extra, missing = sorted(present - listed)[:5], sorted(listed - present)[:5]
        raise SchemaError(f"snapshot: {resolved.prefix} does not match its manifest (extra {extra}, "
                          f"missing {missing}); refusing to load files of another run")


def upload_snapshot(s3: Any, snap: str | Path, uri: str) -> tuple[str, list[str]]:
    """Upload a local snapshot's graph files under ``uri``/<run>/ (same relative paths); returns the
    prefix and the object keys. History, quarantine and state are not uploaded."""
    fs = fsys.LocalFS()
    resolved = snapshot.resolve(fs, snap)
    files = snapshot.graph_files(fs, resolved.prefix)
    if not files:
        raise SchemaError(f"snapshot: no vertex or edge CSV files under {resolved.prefix}")
    _folders(files, resolved.prefix)
    bucket, base = parse_s3(uri)
    run = resolved.run or snapshot.new_run_id()
    prefix = "/".join(p for p in (base, run) if p)
    if s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/", MaxKeys=1).get("KeyCount", 0):
        raise SchemaError(f"s3://{bucket}/{prefix}/ is not empty; refusing to mix runs in one load prefix")
    jobs = [(f.uri, f"{prefix}/{fsys.relative(resolved.prefix, f.uri)}") for f in files]
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda job: s3.upload_file(job[0], bucket, job[1]), jobs))
    return f"s3://{bucket}/{prefix}", [key for _, key in jobs]


def start_load(neptune: Any, source: str, iam_role_arn: str, region: str, depends_on: list[str] | None = None,
               parallelism: str = "MEDIUM") -> str:
    """Queued, not failing on a bad row, never replacing single values: an old snapshot cannot roll the graph back."""
    params: dict[str, Any] = {
        "source": source, "format": "csv", "s3BucketRegion": region, "iamRoleArn": iam_role_arn,
        "mode": "AUTO", "failOnError": False, "parallelism": parallelism,
        "updateSingleCardinalityProperties": False, "queueRequest": True,
    }
    if depends_on:
        params["dependencies"] = depends_on
    response = neptune.start_loader_job(**params)
    return response["payload"]["loadId"]


def wait_for_load(neptune: Any, load_id: str, poll_s: float = 10.0, timeout_s: float = 6 * 3600,
                  sleep: Any = time.sleep) -> dict[str, Any]:
    """The loader is asynchronous: only polling tells a finished load from one with unparsable rows or a failed one."""
    deadline = time.monotonic() + timeout_s
    while True:
        payload = neptune.get_loader_job_status(loadId=load_id, details=True, errors=True)["payload"]
        overall = payload["overallStatus"]
        status = overall["status"]
        if status == DONE:
            if overall.get("parsingErrors"):
                errors = payload.get("errors", {}).get("errorLogs", [])[:3]
                raise GraphError(f"Neptune load {load_id}: {overall['parsingErrors']} rows could not be parsed: "
                                 f"{errors}")
            return overall
        if status not in RUNNING:
            errors = payload.get("errors", {}).get("errorLogs", [])[:3]
            raise GraphError(f"Neptune load {load_id} ended with {status}: {errors}")
        if time.monotonic() > deadline:
            raise GraphError(f"Neptune load {load_id} still {status} after {timeout_s:.0f}s")
        sleep(poll_s)


def bulk_load(s3: Any, neptune: Any, snap: str | Path, uri: str | None, iam_role_arn: str, region: str,
              poll_s: float = 10.0, sleep: Any = time.sleep) -> dict[str, Any]:
    """Load one run: in place when ``snap`` is in S3, else uploaded under ``uri`` first."""
    uploaded: list[str] = []
    if fsys.is_local(snap):
        if not uri:
            raise SchemaError("neptune-load: a local snapshot needs --s3 s3://bucket/prefix to upload to")
        base, uploaded = upload_snapshot(s3, snap, uri)
        fs: fsys.FS = fsys.PyFS(s3)
        resolved = snapshot.Resolved(base, base)
    else:
        fs = fsys.PyFS(s3)
        resolved = snapshot.resolve(fs, str(snap))
    files = snapshot.graph_files(fs, resolved.prefix)
    if not files:
        raise SchemaError(f"snapshot: no vertex or edge CSV files under {resolved.prefix}")
    folders = _folders(files, resolved.prefix)
    _check_matches_manifest(fs, resolved, list(folders))
    vertex_jobs = [start_load(neptune, _neptune_uri(fsys.join(resolved.prefix, top)) + "/", iam_role_arn, region)
                   for top, kind in sorted(folders.items()) if kind == "vertices"]
    edge_jobs = [start_load(neptune, _neptune_uri(fsys.join(resolved.prefix, top)) + "/", iam_role_arn, region,
                            depends_on=vertex_jobs or None)
                 for top, kind in sorted(folders.items()) if kind == "edges"]
    results = {load_id: wait_for_load(neptune, load_id, poll_s, sleep=sleep) for load_id in vertex_jobs + edge_jobs}
    vertices = [results[i] for i in vertex_jobs]
    edges = [results[i] for i in edge_jobs]
    return {
        "source": _neptune_uri(resolved.prefix), "run": resolved.run, "uploaded": len(uploaded),
        "vertices": vertices[0] if len(vertices) == 1 else vertices,
        "edges": edges[0] if len(edges) == 1 else edges,
        # rows whose value the graph already held differently: the graph's value was kept
        "kept_graph_values": sum(int(r.get("insertErrors", 0) or 0) for r in results.values()),
    }
