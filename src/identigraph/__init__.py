"""identigraph: an identity graph of customers and the identifiers they share, scored for fraud."""

__version__ = "0.1.0"
