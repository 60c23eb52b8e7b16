"""Typed errors. Each names what is wrong so a user can fix it without reading a traceback."""


class IdentigraphError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""


class ConfigError(IdentigraphError):
    """The configuration tree is invalid (the message names each bad field)."""


class ServiceError(IdentigraphError):
    """A local service could not be fetched, started, reached or stopped."""


class JavaNotFoundError(ServiceError):
    pass


class PortInUseError(ServiceError):
    pass


class GraphError(IdentigraphError):
    """A graph request failed for a reason retries cannot fix."""


class GraphTimeout(GraphError):
    """A graph request passed its deadline; the server was told the same deadline and stops there too."""


class SchemaError(IdentigraphError):
    """A record does not fit the graph schema or the input contract (names the field)."""


class PiiKeyError(IdentigraphError):
    """No pseudonymisation key where one is required."""
