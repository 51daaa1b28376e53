"""D-Tools SI: projects published by SI users, read from the Subscribe API's queue."""
from connectors.dtools_si.client import DToolsSiConnector

__all__ = ["DToolsSiConnector"]
