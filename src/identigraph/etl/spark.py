"""One SparkSession recipe for the CLI, spark-submit and tests.

Under ``spark-submit`` (or any launcher that started the JVM: EMR steps, Livy) the submitter's settings —
``--master``, ``--conf``, ``spark-defaults.conf`` — are the cluster's and win: ours apply only to keys it
left unset. Only when this process starts its own JVM (``identigraph etl``, tests) does the config's
``etl`` section (master, driver memory) apply. Two things are set regardless because the job's meaning
depends on them: the session time zone is UTC, and the JVMs run with ``-Duser.timezone=UTC`` (appended
to the submitter's own Java options, never replacing them).

Scale settings are not constants: where nobody set ``spark.sql.shuffle.partitions`` the job derives it
from the input size and the cluster's cores (``scale_for_input``); adaptive execution then coalesces
small shuffles and splits skewed ones.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from pyspark import SparkConf, SparkContext
from pyspark.sql import DataFrame, SparkSession

from identigraph.config import Settings
from identigraph.etl import fs as fsys
from identigraph.etl import snapshot

UTC_JAVA = "-Duser.timezone=UTC"
SHUFFLE = "spark.sql.shuffle.partitions"
BYTES_PER_SHUFFLE_PARTITION = 128 << 20  # of input; the shuffles carry about as much as the input
MAX_SHUFFLE_PARTITIONS = 20_000

# Spark's S3A committer binding (spark-hadoop-cloud): parts become visible only when the job commits,
# with no rename (an S3 "rename" is a copy). Set only when this process added the jars itself.
S3A_COMMITTER = {
    "spark.sql.sources.commitProtocolClass": "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol",
    "spark.sql.parquet.output.committer.class":
        "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
    "spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a":
        "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory",
    "spark.hadoop.fs.s3a.committer.name": "magic",
    "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
}


def submitted() -> bool:
    """True when a launcher (spark-submit, EMR, Livy) started the JVM and handed us its gateway."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _defaults(settings: Settings, app_name: str, own_jvm: bool, hive_dir: Path | None,
              jars: list[str] | None) -> dict[str, str]:
    etl = settings.etl
    out = {
        "spark.app.name": app_name,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.adaptive.skewJoin.enabled": "true",
        # no _SUCCESS markers: Neptune's bulk loader reads every file under the prefix it is given
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    }
    if etl.shuffle_partitions is not None:
        out[SHUFFLE] = str(etl.shuffle_partitions)
    if own_jvm:
        out.update({"spark.master": etl.master, "spark.driver.memory": etl.driver_memory,
                    "spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false"})
        if jars:
            out["spark.jars"] = ",".join(jars)
            out.update(S3A_COMMITTER)
        if hive_dir is not None:
            hive_dir = Path(hive_dir).resolve()
            out.update({
                "spark.sql.catalogImplementation": "hive",
                "spark.sql.warehouse.dir": str(hive_dir / "warehouse"),
                "spark.hadoop.javax.jdo.option.ConnectionURL":
                    f"jdbc:derby:;databaseName={hive_dir / 'metastore_db'};create=true",
                "spark.driver.extraJavaOptions": f"-Dderby.system.home={hive_dir}",
            })
    return out


def session(settings: Settings, app_name: str = "identigraph-etl", master: str | None = None,
            hive_dir: Path | None = None) -> SparkSession:
    """The active session if there is one, else one built from the submitter's settings plus ours where
    it gave none. ``hive_dir``: a local embedded (Derby) Hive metastore and warehouse there; on a
    cluster the submitter's ``spark.sql.catalogImplementation=hive`` (EMR's Glue or Hive metastore) is
    used as it is."""
    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    # Python workers must be this interpreter (this venv), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    own_jvm = not submitted()
    jars = None
    if own_jvm:
        from identigraph.etl.cloud_jars import cached_jars

        jars = cached_jars(settings)
    wanted = _defaults(settings, app_name, own_jvm, hive_dir if own_jvm else None, jars)
    if master:
        wanted["spark.master"] = master
    if own_jvm:
        given = SparkConf(loadDefaults=False)
    else:
        SparkContext._ensure_initialized()  # joins the launcher's JVM: its system properties are the settings
        given = SparkConf()
    builder = SparkSession.builder
    for key, value in wanted.items():
        if own_jvm or not given.contains(key):
            builder = builder.config(key, value)
    for side in ("driver", "executor"):  # appended, so a cluster's own JVM options survive
        key = f"spark.{side}.extraJavaOptions"
        base = given.get(key, None) or wanted.get(key, "")
        if UTC_JAVA not in base:
            builder = builder.config(key, f"{base} {UTC_JAVA}".strip())
    if wanted.get("spark.sql.catalogImplementation") == "hive" or \
            given.get("spark.sql.catalogImplementation", None) == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def was_set(spark: SparkSession, key: str) -> bool:
    """Whether the submitter or the config set ``key`` (Spark's own default does not count)."""
    return bool(spark.sparkContext.getConf().contains(key))


def _shuffle_partitions(spark: SparkSession) -> int:
    value = spark.conf.get(SHUFFLE)
    return int(value) if value is not None else 200  # Spark's own default (get() finds it set in practice)


def scale_for_input(spark: SparkSession, input_bytes: int) -> int:
    """Shuffle partitions for this input where nobody chose them: about one per 128 MiB of input, at
    least two per core the cluster has. Returns the value in force."""
    if was_set(spark, SHUFFLE):
        return _shuffle_partitions(spark)
    cores = max(1, spark.sparkContext.defaultParallelism)
    n = max(2 * cores, math.ceil(input_bytes / BYTES_PER_SHUFFLE_PARTITION))
    n = min(n, MAX_SHUFFLE_PARTITIONS)
    spark.conf.set(SHUFFLE, str(n))
    return n


def output_files(rows: int, configured: int | None, rows_per_file: int) -> int:
    """CSV parts for one label: the configured number, else one per ``rows_per_file`` rows."""
    if configured is not None:
        return configured
    return max(1, math.ceil(rows / rows_per_file))


def effective(spark: SparkSession) -> dict[str, Any]:
    """The settings a run reports (what the cluster and the job ended up with)."""
    return {"master": spark.sparkContext.master, "shuffle_partitions": _shuffle_partitions(spark),
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "app_name": spark.sparkContext.appName}


def write_csv(df: DataFrame, path: str | Path, files: int) -> None:
    """Write ``df`` as snapshot CSV (``snapshot``'s dialect): every Spark job's staged tables read alike."""
    (df.coalesce(files).write.mode("overwrite")
       .option("header", True).option("quote", '"').option("escape", '"')  # RFC 4180: "" inside quotes
       .option("nullValue", "").option("emptyValue", '""')
       .option("timestampFormat", snapshot.TS_FORMAT_SPARK)
       .csv(str(path)))
    drop_checksums(path)


def drop_checksums(path: str | Path) -> None:
    """The local filesystem's ``.crc`` side files (object stores write none): not part of a snapshot."""
    if fsys.is_local(path):
        for junk in fsys.local_path(path).rglob(".*.crc"):
            junk.unlink()
