"""The jars Spark needs for ``s3a://`` and the S3 committers, fetched from Maven Central by setup.

pip's pyspark bundles Hadoop (client API and runtime) but not ``hadoop-aws`` nor Spark's
``spark-hadoop-cloud`` (the ``PathOutputCommitProtocol`` that binds Spark's writes to the S3A
committers). On EMR the cluster has its own (``s3://`` is EMRFS with its S3-optimised committer): this is
for local runs and the tests. The jars land in the Maven cache (~/.m2, the AWS SDK bundle alone is ~612
MiB), never in the clone; a classpath file in ``services.cache_dir`` points at them.

Versions must match the Hadoop that pyspark bundles (``hadoop-client-api-<v>.jar``): hadoop-aws 3.4.2
was built against AWS SDK 2.29.52.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from identigraph.config import Settings
from identigraph.errors import ServiceError

HADOOP = "3.4.2"
ARTIFACTS = (
    ("org.apache.hadoop", "hadoop-aws", HADOOP),
    ("software.amazon.awssdk", "bundle", "2.29.52"),
    ("software.amazon.s3.analyticsaccelerator", "analyticsaccelerator-s3", "1.2.1"),
    ("org.wildfly.openssl", "wildfly-openssl", "2.1.4.Final"),
    # the newest 4.1.x on Maven Central; the class it adds is the same across the 4.x line
    ("org.apache.spark", "spark-hadoop-cloud_2.13", "4.1.2"),
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>identigraph</groupId><artifactId>spark-s3-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""
# every transitive dependency excluded: pyspark already carries Hadoop, and the SDK bundle is shaded
_DEP = ("    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>"
        "</dependency>")


def _classpath_file(settings: Settings) -> Path:
    return settings.cache_path / f"spark-s3-hadoop-{HADOOP}.classpath"


def cached_jars(settings: Settings) -> list[str] | None:
    """The jars if setup fetched them (every file still there), else None."""
    path = _classpath_file(settings)
    if not path.exists():
        return None
    jars = [p for p in path.read_text().strip().split(":") if p]
    return jars if len(jars) == len(ARTIFACTS) and all(Path(p).exists() for p in jars) else None


def install(settings: Settings) -> list[str]:
    """Fetch the jars (idempotent) and return their paths."""
    from identigraph.services.artifacts import DEPENDENCY_PLUGIN, run_maven

    jars = cached_jars(settings)
    if jars:
        return jars
    settings.cache_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        deps = "\n".join(_DEP.format(g=g, a=a, v=v) for g, a, v in ARTIFACTS)
        (Path(tmp) / "pom.xml").write_text(_POM.format(deps=deps))
        out = Path(tmp) / "cp.txt"
        run_maven(settings, f"{DEPENDENCY_PLUGIN}:build-classpath", f"-Dmdep.outputFile={out}", cwd=Path(tmp))
        jars = [p for p in out.read_text().strip().split(":") if p]
    if len(jars) != len(ARTIFACTS) or not any("hadoop-aws" in j for j in jars):
        raise ServiceError(f"resolved S3 classpath is incomplete: {jars}")
    _classpath_file(settings).write_text(":".join(jars))
    return jars


if __name__ == "__main__":  # `make install`: python -m identigraph.etl.cloud_jars
    from identigraph.config import load_settings

    found = install(load_settings())
    print(f"spark s3 jars: {len(found)} in the Maven cache")
