"""Prospect CRM (prospect365): companies and contacts over its OData v4 API."""
from connectors.prospect_crm.client import ProspectCrmConnector

__all__ = ["ProspectCrmConnector"]
