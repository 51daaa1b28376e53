"""Deltek Ajera (projects, clients, contacts, employees, project transactions)."""
from connectors.ajera.client import AjeraConnector

__all__ = ["AjeraConnector"]
