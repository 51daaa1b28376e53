"""The default Sage BOB 50 layout: our own table and column names. Sage publishes no data model
of BOB 50 (SQL Server, or a Firebird variant), so accord owns these names; every table and
column can be renamed in the configuration, and the connector keeps exposing the logical
names below. Dutch / French names as BOB shows them.

third_parties -> ``THIRD_PARTY`` ("derden" / "tiers")
    TP_ID         key, text: the third party's code ("code derde" / "code tiers"); creates get
                  the next ``C00001``...
    TP_TYPE       'C' customer ("klant" / "client"), 'S' supplier ("leverancier" /
                  "fournisseur")
    NAME          name ("naam" / "nom")
    VAT_NUMBER    VAT number as typed ("btw-nummer" / "numéro de TVA"), any spelling
    BOBSYNC       1 = synchronised with Sage CRM (the "BOBSync" tick), 0 / NULL = not
    ADDRESS, POSTCODE, CITY, COUNTRY   ("adres, postcode, gemeente, land" / "adresse, code
                  postal, localité, pays")
    PHONE, EMAIL, WEBSITE, LANGUAGE    ("telefoon, e-mail, website, taal")
    CREATED_AT    created at, stamped on create
    MODIFIED_AT   modified at, the change cursor
    CRM_ID        the Sage CRM company id of a third party created from there, so an
                  interrupted create is found again
    PF_*          personal fields ("persoonlijke velden" / "champs personnels"): every column
                  whose name starts with ``personal_prefix`` (default ``PF_``) is a field of its
                  own, described by ``PERSONAL_FIELD``
    hard deletes, inferred from ids
contacts -> ``CONTACT`` ("contactpersonen" / "contacts")
    CONTACT_ID    key, integer autoincrement
    TP_ID         the third party
    FIRST_NAME, LAST_NAME, FUNCTION, PHONE, EMAIL   ("voornaam, naam, functie, telefoon")
    MODIFIED_AT   modified at
    hard deletes, inferred from ids

personal_fields -> ``PERSONAL_FIELD`` (not an entity: the description of the personal fields)
    NAME          the column of THIRD_PARTY that holds it
    LABEL         the label BOB shows ("omschrijving" / "libellé")
    TYPE          text, number, date or bool
company_file -> ``COMPANY_FILE`` (not an entity: the accounting file, "dossier")
    FILE_ID       an id made with the file; ``identity()`` carries it

Times are naive local times (``timezone = "Europe/Brussels"`` by default).
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
    labels: dict[str, str] = field(default_factory=dict)


DEFAULT: dict[str, Table] = {
    "third_parties": Table(
        "THIRD_PARTY", "TP_ID",
        ("TP_ID", "TP_TYPE", "NAME", "VAT_NUMBER", "BOBSYNC", "ADDRESS", "POSTCODE", "CITY",
         "COUNTRY", "PHONE", "EMAIL", "WEBSITE", "LANGUAGE", "CREATED_AT", "MODIFIED_AT",
         "CRM_ID"),
        {"created": "CREATED_AT"},
        {"TP_ID": "Code", "TP_TYPE": "Type", "NAME": "Naam", "VAT_NUMBER": "Btw-nummer",
         "BOBSYNC": "BOBSync", "ADDRESS": "Adres", "POSTCODE": "Postcode", "CITY": "Gemeente",
         "COUNTRY": "Land", "PHONE": "Telefoon", "EMAIL": "E-mail", "WEBSITE": "Website",
         "LANGUAGE": "Taal", "CREATED_AT": "Aangemaakt", "MODIFIED_AT": "Gewijzigd",
         "CRM_ID": "Sage CRM id"}),
    "contacts": Table(
        "CONTACT", "CONTACT_ID",
        ("CONTACT_ID", "TP_ID", "FIRST_NAME", "LAST_NAME", "FUNCTION", "PHONE", "EMAIL",
         "MODIFIED_AT"),
        labels={"CONTACT_ID": "Id", "TP_ID": "Derde", "FIRST_NAME": "Voornaam",
                "LAST_NAME": "Naam", "FUNCTION": "Functie", "PHONE": "Telefoon",
                "EMAIL": "E-mail", "MODIFIED_AT": "Gewijzigd"}),
}
PERSONAL = Table("PERSONAL_FIELD", "NAME", ("NAME", "LABEL", "TYPE"))


class TableLayout(BaseModel):
    """One table's real names: ``table``, and ``columns`` = {logical name: real column}."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = None
    columns: dict[str, str] = {}


KNOWN = {**DEFAULT, "personal_fields": PERSONAL}


def check_layout(layout: dict[str, TableLayout]) -> dict[str, TableLayout]:
    for name, tl in layout.items():
        if name not in KNOWN:
            raise ValueError(f"layout.{name}: unknown table (known: {', '.join(KNOWN)})")
        unknown = sorted(set(tl.columns) - set(KNOWN[name].columns))
        if unknown:
            raise ValueError(f"layout.{name}.columns: unknown logical column(s) "
                             f"{', '.join(unknown)} (known: {', '.join(KNOWN[name].columns)})")
    return layout


def real(layout: dict[str, TableLayout], name: str) -> tuple[str, dict[str, str]]:
    """A table's real name and its columns, logical name -> real name."""
    t = KNOWN[name]
    tl = layout.get(name) or TableLayout()
    return tl.table or t.table, {c: tl.columns.get(c, c) for c in t.columns}


def entity_specs(layout: dict[str, TableLayout], *, prefix: str, width: int
                 ) -> dict[str, EntitySpec]:
    specs: dict[str, EntitySpec] = {}
    for entity, t in DEFAULT.items():
        table, columns = real(layout, entity)
        spec: dict[str, Any] = {"table": table, "key": t.key, "columns": columns,
                                "modified": "MODIFIED_AT", "deletes": "ids", **t.extra}
        if entity == "third_parties":
            spec["key_generation"] = {"prefix": prefix, "width": width}
        specs[entity] = EntitySpec.model_validate(spec)
    return specs
