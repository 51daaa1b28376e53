"""The default Sage 50 FR layout: our own table and column names, since the real ones vary
between versions and are not public. Every name can be overridden in the configuration; the
connector keeps exposing these logical names.

third_parties -> ``THIRD_PARTY`` (customers and prospects, "tiers": clients et prospects)
    ACCOUNT_CODE  key, text: the account code ("code de compte"); creates get C000001...
    TYPE          'C' customer ("client") / 'P' prospect ("prospect")
    NAME          company name ("raison sociale")
    ADDRESS1, ADDRESS2, POSTCODE, CITY, COUNTRY   address ("adresse", "code postal", "ville",
                  "pays")
    PHONE, EMAIL, WEBSITE   ("téléphone", "e-mail", "site internet")
    VAT_NUMBER    intra-community VAT number ("numéro de TVA intracommunautaire")
    SALES_REP     the sales rep's full name, text ("représentant")
    NOTES         free notes ("observations")
    CREATED_AT    created at, stamped on create ("date de création")
    MODIFIED_AT   modified at, the change cursor ("date de modification")
    CRM_ID        the Sales Management id of a company created from there: a custom field
                  ("champ personnalisé"), so that an interrupted create is found again
    hard deletes, inferred from ids
contacts -> ``CONTACT`` (addresses and contacts of a third party, "contacts / adresses")
    CONTACT_ID    key, integer autoincrement
    ACCOUNT_CODE  the third party (foreign key to THIRD_PARTY)
    IS_CONTACT    1 = a contact address ("adresse de contact"); 0 = another address (delivery,
                  invoicing: "adresse de livraison, de facturation"); creates default to 1
    CIVILITY, FIRST_NAME, LAST_NAME, FUNCTION   ("civilité", "prénom", "nom", "fonction")
    PHONE, MOBILE, EMAIL   ("téléphone", "portable", "e-mail")
    MODIFIED_AT   modified at
    CRM_ID        the Sales Management id of a contact created from there (a custom field)
    ACCOUNT_TYPE  read-only, joined: THIRD_PARTY.TYPE of its third party; the third party's
                  MODIFIED_AT is folded in, so a contact counts as changed when its prospect
                  becomes a customer
    hard deletes, inferred from ids
items -> ``ITEM`` (products, "articles")
    ITEM_CODE     key, text ("référence")
    DESCRIPTION   ("désignation")
    STOCK_TYPE    'S' stocked / 'N' non-stock, e.g. services ("article non géré en stock")
    STOCK_QTY     quantity in stock ("stock réel")
    SALE_PRICE    sale price excluding tax ("prix de vente HT")
    IMAGE         picture (BLOB, exposed as base64) ("image")
    ACTIVE        1 active / 0 inactive ("actif / en sommeil")
    MODIFIED_AT   modified at
    hard deletes, inferred from ids
invoices -> ``INVOICE`` (sales invoices, "factures")
    INVOICE_ID    key, integer
    NUMBER        invoice number, e.g. FA000123 ("numéro de pièce")
    ACCOUNT_CODE  the customer
    DATE, DUE_DATE   ("date", "date d'échéance")
    TOTAL_EXCL_TAX, TOTAL_INCL_TAX   ("total HT", "total TTC")
    STATUS        ("état")
    MODIFIED_AT   modified at
    hard deletes, inferred from ids

company_file -> ``COMPANY_FILE`` (not an entity: the company file itself, "dossier")
    FILE_ID       an id made when the company file was created; ``identity()`` carries it
                  (setting ``identity_marker``), so a file made again at the same path is
                  another instance
    NAME          the company's name ("raison sociale du dossier")

Times are naive local times (``timezone = "Europe/Paris"`` by default). Amounts (NUMERIC)
come out as floats, IMAGE as base64, dates as ``YYYY-MM-DD``, datetimes as ISO UTC.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from connectors.sql.spec import EntitySpec


@dataclass(frozen=True)
class Table:
    table: str
    key: str
    columns: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


DEFAULT: dict[str, Table] = {
    "third_parties": Table(
        "THIRD_PARTY", "ACCOUNT_CODE",
        ("ACCOUNT_CODE", "TYPE", "NAME", "ADDRESS1", "ADDRESS2", "POSTCODE", "CITY", "COUNTRY",
         "PHONE", "EMAIL", "WEBSITE", "VAT_NUMBER", "SALES_REP", "NOTES", "CREATED_AT",
         "MODIFIED_AT", "CRM_ID"),
        {"created": "CREATED_AT"}),
    "contacts": Table(
        "CONTACT", "CONTACT_ID",
        ("CONTACT_ID", "ACCOUNT_CODE", "IS_CONTACT", "CIVILITY", "FIRST_NAME", "LAST_NAME",
         "FUNCTION", "PHONE", "MOBILE", "EMAIL", "MODIFIED_AT", "CRM_ID"),
        {"defaults": {"IS_CONTACT": 1}}),
    "items": Table(
        "ITEM", "ITEM_CODE",
        ("ITEM_CODE", "DESCRIPTION", "STOCK_TYPE", "STOCK_QTY", "SALE_PRICE", "IMAGE", "ACTIVE",
         "MODIFIED_AT")),
    "invoices": Table(
        "INVOICE", "INVOICE_ID",
        ("INVOICE_ID", "NUMBER", "ACCOUNT_CODE", "DATE", "DUE_DATE", "TOTAL_EXCL_TAX",
         "TOTAL_INCL_TAX", "STATUS", "MODIFIED_AT")),
}
JOINED = {"contacts": {"ACCOUNT_TYPE": "TYPE"}}     # contacts' fields from THIRD_PARTY


class TableLayout(BaseModel):
    """One entity's real names: ``table``, and ``columns`` = {logical name: real column}."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = None
    columns: dict[str, str] = {}


def check_layout(layout: dict[str, TableLayout]) -> dict[str, TableLayout]:
    for entity, tl in layout.items():
        if entity not in DEFAULT:
            raise ValueError(f"layout.{entity}: unknown entity (known: {', '.join(DEFAULT)})")
        unknown = sorted(set(tl.columns) - set(DEFAULT[entity].columns))
        if unknown:
            raise ValueError(f"layout.{entity}.columns: unknown logical column(s) "
                             f"{', '.join(unknown)} (known: "
                             f"{', '.join(DEFAULT[entity].columns)})")
    return layout


def entity_specs(layout: dict[str, TableLayout], *, prefix: str, width: int
                 ) -> dict[str, EntitySpec]:
    """The four EntitySpecs with the real names; fields keep the logical names."""
    def real(entity: str) -> tuple[str, dict[str, str]]:
        t = DEFAULT[entity]
        tl = layout.get(entity) or TableLayout()
        return tl.table or t.table, {c: tl.columns.get(c, c) for c in t.columns}

    specs: dict[str, EntitySpec] = {}
    for entity, t in DEFAULT.items():
        table, columns = real(entity)
        spec: dict[str, Any] = {"table": table, "key": t.key, "columns": columns,
                                "modified": "MODIFIED_AT", "deletes": "ids", **t.extra}
        if entity == "third_parties":
            spec["key_generation"] = {"prefix": prefix, "width": width}
        if entity in JOINED:
            parent, parent_cols = real("third_parties")
            spec["join"] = {"table": parent,
                            "on": {"ACCOUNT_CODE": parent_cols["ACCOUNT_CODE"]},
                            "columns": {f: parent_cols[c] for f, c in JOINED[entity].items()},
                            "modified": parent_cols["MODIFIED_AT"]}
        specs[entity] = EntitySpec.model_validate(spec)
    return specs
