"""Sage Sales Management (formerly ForceManager), API v4."""
from connectors.sage_sales_management.client import SageSalesManagementConnector

__all__ = ["SageSalesManagementConnector"]
