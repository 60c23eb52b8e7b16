"""One SparkSession recipe for the CLI, spark-submit and tests: UTC everywhere, quiet console."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from identigraph.config import Settings


def session(settings: Settings, app_name: str = "identigraph-etl", master: str | None = None) -> SparkSession:
    """Reuses an active session (spark-submit made one with the cluster's settings) or builds a local one."""
    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    # Python workers must be this interpreter (this venv), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    etl = settings.etl
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or etl.master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.sql.shuffle.partitions", str(etl.shuffle_partitions))
        .config("spark.driver.memory", etl.driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # no _SUCCESS markers: Neptune's bulk loader reads every file under the prefix it is given
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
