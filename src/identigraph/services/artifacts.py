"""Fetches the Java services from Maven Central with the user's own Maven.

Artifacts land in the Maven cache (~/.m2) and the unpacked server in ``services.cache_dir``: both live
outside the clone, so a fresh checkout (CI) reuses them instead of downloading again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from identigraph.config import Settings
from identigraph.errors import JavaNotFoundError, ServiceError

TEMPLATES = Path(__file__).with_name("templates")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"


def require_tool(name: str, what: str) -> str:
    """The path of a tool the local services need, or an error that says how to install it."""
    found = shutil.which(name)
    if not found:
        hint = "apt-get install -y openjdk-17-jre-headless" if what == "Java" else "apt-get install -y maven"
        raise JavaNotFoundError(
            f"{what} not found: '{name}' is not on PATH (set services.{'java' if what == 'Java' else 'mvn'} "
            f"in the config, or install it: {hint})"
        )
    return found


def run_maven(settings: Settings, *args: str, cwd: Path | None = None) -> str:
    """Maven in batch mode, its output kept for the error: the one way jars and classpaths are fetched."""
    mvn = require_tool(settings.services.mvn, "Maven")
    proc = subprocess.run(
        [mvn, "-q", "-B", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ServiceError(f"mvn {' '.join(args)} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


def gremlin_server_home(settings: Settings) -> Path:
    """Unpacked gremlin-server distribution, fetched on first use."""
    version = settings.services.gremlin.version
    home = settings.cache_path / f"apache-tinkerpop-gremlin-server-{version}"
    if (home / "lib" / f"gremlin-server-{version}.jar").exists():
        return home
    coords = f"org.apache.tinkerpop:gremlin-server:{version}:zip:distribution"
    settings.cache_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.cache_path) as tmp:
        # copy (not get): the file lands where we say, whatever local repository the user's Maven uses
        run_maven(settings, f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={coords}", f"-DoutputDirectory={tmp}")
        zip_path = Path(tmp) / f"gremlin-server-{version}-distribution.zip"
        if not zip_path.exists():
            raise ServiceError(f"Maven reported success but {zip_path.name} is missing")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        unpacked = Path(tmp) / home.name
        if not unpacked.exists():
            raise ServiceError(f"{zip_path.name} does not contain {home.name}/")
        if home.exists():
            shutil.rmtree(home)
        unpacked.rename(home)
    return home


def gremlin_server_classpath(home: Path) -> str:
    """Same classpath as the distribution's bin/gremlin-server.sh builds."""
    parts = [str(home / "conf")]
    parts += sorted(str(p) for p in (home / "lib").glob("*.jar"))
    parts += sorted(str(d / "plugin" / "*") for d in (home / "ext").iterdir() if d.is_dir())
    return ":".join(parts)


def elasticmq_classpath(settings: Settings) -> str:
    """Resolved once per version and cached as a classpath file pointing into ~/.m2."""
    version = settings.services.elasticmq.version
    cp_file = settings.cache_path / f"elasticmq-{version}.classpath"
    if cp_file.exists():
        cp = cp_file.read_text().strip()
        if cp and all(Path(p).exists() for p in cp.split(":")):
            return cp
    settings.cache_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text((TEMPLATES / "elasticmq-pom.xml").read_text().replace("${elasticmq.version}", version))
        out = Path(tmp) / "cp.txt"
        run_maven(settings, f"{DEPENDENCY_PLUGIN}:build-classpath", f"-Dmdep.outputFile={out}", cwd=Path(tmp))
        cp = out.read_text().strip()
    if "elasticmq-server" not in cp:
        raise ServiceError(f"resolved ElasticMQ classpath lacks elasticmq-server: {cp[:200]}")
    cp_file.write_text(cp)
    return cp


def checkpoint_classes(settings: Settings) -> Path:
    """``templates/checkpoints.groovy`` compiled with the server's own Groovy, once per version of the source."""
    import hashlib

    source = TEMPLATES / "checkpoints.groovy"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = settings.cache_path / f"checkpoints-{digest}"
    if (out / "IdentigraphCheckpoints.class").exists():
        return out
    home = gremlin_server_home(settings)
    java = require_tool(settings.services.java, "Java")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([java, "-cp", gremlin_server_classpath(home),
                           "org.codehaus.groovy.tools.FileSystemCompiler", "-d", str(tmp), str(source)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"compiling {source.name} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    try:
        tmp.rename(out)
    except OSError:  # another process compiled it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def install(settings: Settings) -> dict[str, str]:
    """Fetch everything the local services need; idempotent."""
    require_tool(settings.services.java, "Java")
    home = gremlin_server_home(settings)
    cp = elasticmq_classpath(settings)
    return {"gremlin_server": str(home), "elasticmq_jars": str(len(cp.split(":"))),
            "checkpoint_classes": str(checkpoint_classes(settings))}
