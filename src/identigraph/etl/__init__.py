"""The historical load (Spark): input contract → Neptune-CSV snapshot → graph, plus export and bulk load.

- ``contract``: read and validate the four tables (bad rows → quarantine with a reason).
- ``transforms``: validated tables → vertices and edges (pure DataFrame functions).
- ``snapshot``: the snapshot layout and CSV format.
- ``job``: the job itself (``identigraph etl`` and ``spark-submit .../etl/job.py``).
- ``graph_load``: snapshot → graph through the batched upserts (``foreachPartition``-style).
- ``export``: graph → snapshot; ``neptune_bulk``: snapshot → S3 → Neptune's bulk loader.
"""
