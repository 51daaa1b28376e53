"""Deltek Vantagepoint (projects, firms, contacts, employees)."""
from connectors.vantagepoint.client import VantagepointConnector

__all__ = ["VantagepointConnector"]
