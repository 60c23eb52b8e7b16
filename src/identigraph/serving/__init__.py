"""The scoring and identity API other teams call (``identigraph serve``).

``app.create_app`` builds it; ``service.ScoringService`` holds the graph client, the served model and the
policy; ``policy`` is the pure decision function. Nothing is imported here, so ``python -m
identigraph.serving.auth`` and the config loader do not pull in FastAPI.
"""
