"""How every stage reads its configuration, so a newcomer learns it once.

The platform settings, the serving and labeling policies, the model, lifecycle and tuning configurations
are each one strict pydantic tree (:class:`StrictModel`) read by :func:`load_config` from, later wins:

1. a YAML file: the path given (a CLI option), else the kind's environment variable
   (``IDENTIGRAPH_CONFIG``, ``IDENTIGRAPH_SERVING_CONFIG``, …), else the default shipped inside the package
   (``identigraph/defaults/*.yaml``, found with :mod:`importlib.resources`, so neither the working directory
   nor an editable install matters);
2. environment variables ``PREFIX`` + ``SECTION__KEY=value``, values parsed as YAML scalars:
   ``IDENTIGRAPH__GRAPH__HOST`` for the settings, ``IDENTIGRAPH_SERVING__POLICY__THRESHOLD``,
   ``IDENTIGRAPH_MODEL__TRAINING__EPOCHS`` … (:data:`KINDS` lists every prefix);
3. what the caller gives: a nested tree merged in (``merge``) and dotted keys set (``sets``, ``--set a.b=1``).

Unknown keys, in the file or in the environment, are errors, and every error names the file and the key:
a mistyped key that silently falls back to a default is how a job ends up running with a value nobody chose.
pydantic-settings would read the environment, but it silently ignores a variable whose first section does
not exist and parses values as JSON rather than YAML, so the one merge below stays hand-written.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from identigraph.errors import ConfigError


class StrictModel(BaseModel):
    """Base of every configuration tree: an unknown key is an error, never a silently ignored typo."""

    model_config = ConfigDict(extra="forbid")


class FrozenModel(StrictModel):
    """A strict tree nobody changes once loaded (the serving and labeling policies are shared by threads)."""

    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True)
class ConfigKind:
    """One kind of configuration file: its packaged default, the variable naming a file, the override prefix."""

    title: str          # names the tree in messages: "invalid serving configuration (FILE): ..."
    default_file: str   # under identigraph/defaults
    file_env: str       # names a file to read instead of the default
    env_prefix: str     # PREFIX + SECTION__KEY overrides one key


SETTINGS = ConfigKind("configuration", "identigraph.yaml", "IDENTIGRAPH_CONFIG", "IDENTIGRAPH__")
SERVING = ConfigKind("serving configuration", "serving.yaml", "IDENTIGRAPH_SERVING_CONFIG", "IDENTIGRAPH_SERVING__")
LABELING = ConfigKind("labeling configuration", "labeling.yaml", "IDENTIGRAPH_LABELING_CONFIG",
                      "IDENTIGRAPH_LABELING__")
MODEL = ConfigKind("model configuration", "model.yaml", "IDENTIGRAPH_MODEL_CONFIG", "IDENTIGRAPH_MODEL__")
LIFECYCLE = ConfigKind("lifecycle configuration", "lifecycle.yaml", "IDENTIGRAPH_LIFECYCLE_CONFIG",
                       "IDENTIGRAPH_LIFECYCLE__")
TUNE = ConfigKind("tuning configuration", "tune.yaml", "IDENTIGRAPH_TUNE_CONFIG", "IDENTIGRAPH_TUNE__")
KINDS = (SETTINGS, SERVING, LABELING, MODEL, LIFECYCLE, TUNE)

T = TypeVar("T", bound=BaseModel)


def packaged_default(name: str) -> Path:
    """The default file shipped in the package: the same file from any directory and any kind of install."""
    # a package installed as files (pip, editable or not) gives a real path; zipped installs are not supported
    return Path(str(resources.files("identigraph").joinpath("defaults", name)))


def config_path(kind: ConfigKind, path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The file a load of ``kind`` reads: the path given, else ``kind.file_env``, else the packaged default."""
    env = os.environ if environ is None else environ
    explicit = path or env.get(kind.file_env)
    return Path(explicit) if explicit else packaged_default(kind.default_file)


def read_yaml(path: Path, title: str = "configuration") -> dict[str, Any]:
    """A YAML mapping from a file, or a ConfigError naming the file (an empty file is an empty mapping)."""
    if not path.is_file():
        raise ConfigError(f"{title} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def env_overrides(prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """``PREFIX`` + ``A__B=value`` variables as the tree ``{"a": {"b": value}}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: cannot parse value: {exc}") from None
    return tree


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``"a.b"``, creating missing levels; the value replaces what was there."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as dotted overrides, values parsed as YAML (``20`` is a number)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set needs KEY=VALUE, not {item!r}")
        try:
            overrides[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value: {exc}") from None
    return overrides


def describe(exc: ValidationError, title: str, source: str | None = None) -> str:
    """Every bad key on its own line, named by its dotted path; extra keys say "unknown key". A cross-field
    check (no path) names its fields itself. ``source`` is the file, when the values came from one."""
    lines = [f"invalid {title} ({source}):" if source else f"invalid {title}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {msg}" if field else f"  {msg}")
    return "\n".join(lines)


def validate(model: type[T], data: Any, title: str, source: str) -> T:
    """``model`` from plain data, or one ConfigError listing every bad key of ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, title, source)) from None


def load_config(
    kind: ConfigKind,
    model: type[T],
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    merge: Mapping[str, Any] | None = None,
    sets: Mapping[str, Any] | None = None,
) -> T:
    """File, then environment, then ``merge`` (a nested tree) and ``sets`` (dotted keys that replace)."""
    env = os.environ if environ is None else environ
    cfg_path = config_path(kind, path, env)
    data = read_yaml(cfg_path, kind.title)
    source = str(cfg_path)
    from_env = env_overrides(kind.env_prefix, env)
    if from_env:
        data = deep_merge(data, from_env)
        source += " + environment"
    if merge:
        data = deep_merge(data, copy.deepcopy(dict(merge)))
    for key, value in (sets or {}).items():
        set_dotted(data, key, value)
    return validate(model, data, kind.title, source)
