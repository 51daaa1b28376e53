"""ConnectWise Manage (PSA): companies, contacts, the product catalog, opportunities and
their products, projects and project tickets."""
from connectors.connectwise.client import ConnectWiseConnector

__all__ = ["ConnectWiseConnector"]
