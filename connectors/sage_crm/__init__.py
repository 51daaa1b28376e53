"""Sage CRM (SData 2.0 REST API): ``client.py`` (the connector), ``sandbox.py`` (its imitation)."""
from connectors.sage_crm.client import SageCrmConnector

__all__ = ["SageCrmConnector"]
