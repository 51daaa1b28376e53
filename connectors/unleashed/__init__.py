"""Unleashed Software (inventory/ERP): customers, customer contacts, sales persons."""
from connectors.unleashed.client import UnleashedConnector

__all__ = ["UnleashedConnector"]
