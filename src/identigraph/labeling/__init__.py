"""Training labels from the graph snapshot: label maturity, then heuristic correction of uncaught fraud.

``job.run_labeling`` is the entry point (``identigraph label``); ``maturity`` and ``rules`` are pure
DataFrame functions of facts already cut at as-of, so tests drive them with hand-made frames.
"""
