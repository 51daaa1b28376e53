"""Connectors and sandboxes by ``type`` name, through entry points, so that a user can add a
system without touching the engine. The built-in ones are known even without installation."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

BUILTIN_CONNECTORS = {
    "unleashed": "connectors.unleashed:UnleashedConnector",
    "prospect_crm": "connectors.prospect_crm:ProspectCrmConnector",
    "memory": "connectors.memory:MemoryConnector",
    "tryton": "connectors.tryton:TrytonConnector",
    "sql": "connectors.sql:SqlConnector",
    "sage50fr": "connectors.sage50fr:Sage50FrConnector",
    "sage_sales_management": "connectors.sage_sales_management:SageSalesManagementConnector",
    "bob50": "connectors.bob50:Bob50Connector",
    "sage_crm": "connectors.sage_crm:SageCrmConnector",
    "ajera": "connectors.ajera:AjeraConnector",
    "vantagepoint": "connectors.vantagepoint:VantagepointConnector",
    "dtools_si": "connectors.dtools_si:DToolsSiConnector",
    "connectwise": "connectors.connectwise:ConnectWiseConnector",
}
BUILTIN_SANDBOXES = {
    "unleashed": "connectors.unleashed.sandbox:UnleashedSandbox",
    "prospect_crm": "connectors.prospect_crm.sandbox:ProspectSandbox",
    "sage50fr": "connectors.sage50fr.sandbox:Sage50FrSandbox",
    # the SQL connector's sandbox: a generated database file (the Sage 50 FR default layout)
    "sql": "connectors.sage50fr.sandbox:Sage50FrSandbox",
    "sage_sales_management": "connectors.sage_sales_management.sandbox:SageSalesManagementSandbox",
    "bob50": "connectors.bob50.sandbox:Bob50Sandbox",
    "sage_crm": "connectors.sage_crm.sandbox:SageCrmSandbox",
    "ajera": "connectors.ajera.sandbox:AjeraSandbox",
    "vantagepoint": "connectors.vantagepoint.sandbox:VantagepointSandbox",
    "dtools_si": "connectors.dtools_si.sandbox:DToolsSiSandbox",
    "connectwise": "connectors.connectwise.sandbox:ConnectWiseSandbox",
}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _find(group: str, builtin: dict[str, str], name: str):
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    if name in builtin:
        return _load(builtin[name])
    known = sorted(set(builtin) | {ep.name for ep in entry_points(group=group)})
    raise KeyError(f"unknown type {name!r} (known: {', '.join(known)})")


def connector_class(name: str):
    return _find("accord.connectors", BUILTIN_CONNECTORS, name)


def sandbox_class(name: str):
    return _find("accord.sandboxes", BUILTIN_SANDBOXES, name)


def sandbox_names() -> list[str]:
    return sorted(set(BUILTIN_SANDBOXES) | {ep.name for ep in entry_points(group="accord.sandboxes")})
