"""Deployments on disk: ``deploy/<stage>`` is a symlink to ``deploy/models/<model version>``.

Why a symlink per stage: an API started with ``--model <data_dir>/deploy/production`` (and
``model_watch_s`` in its serving config) re-reads that path's metrics.json and reloads when the version
changes — that is how every worker process of the server follows a promotion. Replacing a directory in
place is not atomic (remove, then rename: a worker polling in between sees nothing, or half); replacing a
symlink is: a new link is made beside it and renamed over it, so a reader resolves either the old model or
the new one. Model copies are immutable once installed, so the old one keeps serving requests in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from identigraph.lifecycle.config import STAGES
from identigraph.lifecycle.gate import LifecycleError
from identigraph.lifecycle.registry import ModelVersion, Registry, read_model_dir


class Deployments:
    """Which model version each stage serves locally, kept on disk so the API and the flow agree."""
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"

    def path(self, stage: str) -> Path:
        """What an API for ``stage`` is started with (``identigraph serve --model``)."""
        return self.root / stage

    def serving(self, stage: str) -> str | None:
        """The model version the stage's path resolves to now, or None."""
        try:
            return read_model_dir(self.path(stage))[0]
        except Exception:
            return None

    def install(self, registry: Registry, mv: ModelVersion) -> Path:
        """The version's files under models/<model version>, fetched once (into a temp dir, then renamed)."""
        target = self.models / mv.model_version
        if (target / "metrics.json").exists():
            return target
        tmp = self.models / f".{mv.model_version}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            registry.fetch(mv.version, tmp)
            got = read_model_dir(tmp)[0]
            if got != mv.model_version:
                raise LifecycleError(f"registry version {mv.version} holds model {got}, not {mv.model_version}")
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def point(self, stage: str, model_dir: Path) -> Path | None:
        """Switch ``stage`` to ``model_dir`` atomically; returns what it pointed at before."""
        if stage not in STAGES:
            raise ValueError(stage)
        link = self.path(stage)
        previous = link.resolve() if link.is_symlink() else None
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} is a real directory: move it away (deployments are symlinks)")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{stage}.link-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.relpath(Path(model_dir).resolve(), self.root.resolve()), tmp)
        os.replace(tmp, link)  # rename(2) over the old link: atomic for every reader
        return previous

    def prune(self, keep: int) -> list[str]:
        """Remove old model copies, keeping those a stage points at and the ``keep`` newest others."""
        if not self.models.exists():
            return []
        live = {self.path(s).resolve().name for s in STAGES if self.path(s).is_symlink()}
        others = sorted((p for p in self.models.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.name not in live), key=lambda p: p.stat().st_mtime, reverse=True)
        removed = []
        for p in others[keep:]:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        return removed

    def status(self) -> dict[str, str | None]:
        return {s: self.serving(s) for s in STAGES}


def notify(urls: list[str], model_dir: Path, admin_key: str | None, timeout_s: float = 30.0) -> list[str]:
    """Ask running APIs to reload now (they would follow within ``model_watch_s`` anyway); returns failures."""
    import httpx

    failures = []
    for url in urls:
        try:
            r = httpx.post(f"{url.rstrip('/')}/v1/admin/model:reload", json={"model_dir": str(model_dir)},
                           headers={"X-API-Key": admin_key or ""}, timeout=timeout_s)
            if r.status_code != 200:
                failures.append(f"{url}: HTTP {r.status_code} {json.dumps(r.json())[:200]}")
        except httpx.HTTPError as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    return failures
