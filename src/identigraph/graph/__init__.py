"""The graph layer every stage shares.

- ``schema``: labels, properties, the deterministic id scheme, typed records.
- ``pseudonym``: keyed hashing of emails and phones (raw PII never enters the graph).
- ``client``: one Gremlin client for the local server and Neptune (TLS, IAM SigV4), with retries.
- ``upsert``: batched idempotent ``mergeV``/``mergeE`` writes.
- ``records``: identity events → vertex/edge records (the Python path; Spark has its own twin).
- ``queries``: identity, shared customers, capped k-hop neighbourhoods, counts, dump, clear.
"""
