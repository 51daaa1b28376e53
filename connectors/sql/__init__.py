"""A system reached through its database: tables as entities (see ``client.py``)."""
from connectors.sql.client import SqlConnector
from connectors.sql.errors import SqlConfigError
from connectors.sql.spec import EntitySpec, Join, KeyGeneration, Settings, SoftDelete

__all__ = ["SqlConnector", "SqlConfigError", "EntitySpec", "Join", "KeyGeneration", "Settings",
           "SoftDelete"]
