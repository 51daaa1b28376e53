"""Tryton (trytond 8.2): parties, products and customer invoices over its JSON-RPC API."""
from connectors.tryton.client import TrytonConnector

__all__ = ["TrytonConnector"]
