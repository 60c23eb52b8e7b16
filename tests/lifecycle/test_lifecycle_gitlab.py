"""The GitLab CI templates and the image: they parse, their stages are in order, and every ``identigraph``
command they (and the container's entry point) call exists in the CLI with the options they pass."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from lifecycle_helpers import assert_cli_accepts

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "gitlab" / name).read_text())


def _jobs(doc: dict) -> dict[str, dict]:
    return {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v and not k.startswith(".")}


def _commands(lines: list[str]) -> list[list[str]]:
    out = []
    for line in lines:
        for part in re.split(r"&&|\|\||;|\|", line):
            tokens = shlex.split(part, comments=True)
            if tokens and tokens[0] == "identigraph":
                out.append(tokens)
    return out


def _script_lines(doc: dict) -> list[str]:
    lines = list(doc.get("default", {}).get("before_script", []))
    for job in _jobs(doc).values():
        lines += job.get("before_script", []) + job["script"]
    return lines


def test_model_build_runs_test_train_evaluate_register_with_existing_commands():
    doc = _load("model-build.yml")
    assert doc["stages"] == ["test", "train", "evaluate", "register"]
    jobs = _jobs(doc)
    assert {j["stage"] for j in jobs.values()} <= set(doc["stages"])
    assert [n for n, j in jobs.items() if j["stage"] != "register"] == ["test", "train", "evaluate"]
    assert any("pytest" in line for line in jobs["test"]["script"])
    commands = _commands(_script_lines(doc))
    called = {" ".join(c[1:3]) for c in commands}
    assert {"train --snapshot", "evaluate --snapshot", "model register", "sagemaker pipeline"} <= called
    assert_cli_accepts(commands, minimum=8)


def test_model_deploy_is_triggered_on_approval_and_production_is_manual():
    doc = _load("model-deploy.yml")
    assert doc["stages"] == ["build", "staging", "test-staging", "production"]
    assert all("MODEL_VERSION" in rule["if"] for rule in doc["workflow"]["rules"])
    jobs = _jobs(doc)
    assert [jobs[n]["stage"] for n in ("build-image", "deploy-staging", "test-staging", "deploy-production")] == \
        doc["stages"]
    assert jobs["deploy-production"]["when"] == "manual" and "when" not in jobs["deploy-staging"]
    assert "deploy/Dockerfile" in " ".join(jobs["build-image"]["script"]) and (DEPLOY / "Dockerfile").exists()
    commands = _commands(_script_lines(doc))
    assert [c[1:5] for c in commands if c[1:3] == ["model", "promote"]] == [
        ["model", "promote", "$MODEL_VERSION", "--to"]] * 2
    assert any(c[1:3] == ["model", "check"] for c in commands)
    assert_cli_accepts(commands, minimum=5)


def test_the_image_entry_point_serves_with_existing_options():
    script = (DEPLOY / "docker-entrypoint.sh").read_text().replace("\\\n", " ")
    commands = _commands([line.replace("exec identigraph", "identigraph") for line in script.splitlines()
                          if "exec identigraph" in line])
    serve = [c for c in commands if c[1:2] == ["serve"]]
    assert serve and "--port" in serve[0] and "8080" in serve[0]  # the port SageMaker hosting calls
    assert_cli_accepts([[t for t in c if t != '"$@"'] for c in serve])
    assert "ENTRYPOINT" in (DEPLOY / "Dockerfile").read_text()
