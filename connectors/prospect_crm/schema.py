"""The sandbox's data model of Prospect CRM: entity sets, properties, validation, sample data.

Kept apart from ``sandbox.py`` (routes, paging, auth, rate limit) so each stays small. Field
names follow the documented/observed OData model (``CompanyId``, ``Forename``, ``Surname``,
``PhoneNumber``, ``MobilePhoneNumber``, ``Fax``, ``AccountManagerId``, ``StatusFlag``,
``LastUpdatedTimestamp``; ``Users`` keyed by ``UserCode`` with ``UserName``); see the
sandbox module docstring for where the model is simplified.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

ADDRESS_FIELDS = {"AddressLine1": 60, "AddressLine2": 60, "AddressLine3": 60,
                  "AddressLine4": 60, "AddressLine5": 60, "Postcode": 15, "Country": 60}


@dataclass(frozen=True)
class EntitySet:
    name: str            # entity set, e.g. "Companies"
    type_name: str       # e.g. "Prospect.Company"
    key: str
    key_type: type
    text: dict[str, int]           # writable text properties -> max length
    other: dict[str, type]         # writable non-text properties -> type
    computed: tuple[str, ...]      # read-only properties (ignored on write)
    required: tuple[str, ...]


COMPANIES = EntitySet(
    "Companies", "Prospect.Company", "CompanyId", int,
    text={"Name": 100, "Telephone": 30, "Website": 255, "AccountManagerId": 10},
    other={"MainAddress": dict},
    computed=("CompanyId", "StatusFlag", "Created", "LastUpdatedTimestamp"),
    required=("Name",))

CONTACTS = EntitySet(
    "Contacts", "Prospect.Contact", "ContactId", int,
    text={"Title": 20, "Forename": 50, "Surname": 50, "JobTitle": 60, "Email": 255,
          "PhoneNumber": 30, "MobilePhoneNumber": 30, "Fax": 30},
    other={"CompanyId": int},
    computed=("ContactId", "StatusFlag", "Created", "LastUpdatedTimestamp"),
    required=("Surname", "CompanyId"))

USERS = EntitySet("Users", "Prospect.User", "UserCode", str,
                  text={}, other={}, computed=("UserCode", "UserName", "EmailAddress"),
                  required=())

SETS = {s.name: s for s in (COMPANIES, CONTACTS, USERS)}

_WEBSITE = re.compile(r"^(https?://)?([A-Za-z0-9-]+\.)+[A-Za-z]{2,}(:\d+)?(/\S*)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Invalid(Exception):
    """A write the service refuses: answered 400 with ``target`` in the OData details."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(message)
        self.target, self.message = target, message


def _text(value: Any, target: str, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(target, f"The value for '{target}' must be a string.")
    value = value.strip()
    if not value:
        return None
    if len(value) > max_len:
        raise Invalid(target, f"'{target}' must be at most {max_len} characters.")
    return value


def clean(es: EntitySet, body: Any, existing: dict | None) -> dict[str, Any]:
    """Normalise and check one write; returns the changes to apply (a partial entity).

    ``existing`` is the stored entity on PATCH, None on POST. Computed properties in the body
    are ignored; unknown ones are refused. Text is trimmed, empty text becomes null.
    """
    if not isinstance(body, dict):
        raise Invalid("", "The request body must be a JSON object.")
    out: dict[str, Any] = {}
    for prop, value in body.items():
        if prop.startswith("@odata.") or prop in es.computed:
            continue
        if prop in es.text:
            out[prop] = _text(value, prop, es.text[prop])
        elif prop == "MainAddress" and es is COMPANIES:
            if value is not None and not isinstance(value, dict):
                raise Invalid(prop, "MainAddress must be an object.")
            address = dict((existing or {}).get("MainAddress") or {})
            for line, line_value in (value or {}).items():
                if line not in ADDRESS_FIELDS:
                    raise Invalid(f"MainAddress/{line}",
                                  f"The property '{line}' does not exist on type "
                                  "'Prospect.Address'.")
                address[line] = _text(line_value, f"MainAddress/{line}", ADDRESS_FIELDS[line])
            if address.get("Postcode"):
                address["Postcode"] = address["Postcode"].upper()
            out[prop] = {k: address.get(k) for k in ADDRESS_FIELDS}
        elif prop in es.other:
            if value is not None and (not isinstance(value, es.other[prop])
                                      or isinstance(value, bool)):
                raise Invalid(prop, f"The value for '{prop}' has the wrong type.")
            out[prop] = value
        else:
            raise Invalid(prop, f"The property '{prop}' does not exist on type "
                                f"'{es.type_name}'.")
    merged = {**(existing or {}), **out}
    for prop in es.required:
        if merged.get(prop) in (None, ""):
            raise Invalid(prop, f"The {prop} field is required.")
    if es is COMPANIES and out.get("Website") and not _WEBSITE.match(out["Website"]):
        raise Invalid("Website", f"The Website field is not a valid web address: "
                                 f"'{out['Website']}'.")
    if es is CONTACTS and out.get("Email") and not _EMAIL.match(out["Email"]):
        raise Invalid("Email", f"The Email field is not a valid e-mail address: "
                               f"'{out['Email']}'.")
    return out


# --- sample data ----------------------------------------------------------------------------

DEFAULT_USERS = [("AM", "Alice Morgan"), ("BT", "Ben Turner"), ("CK", "Chloe King"),
                 ("DL", "Dev Lal"), ("EW", "Emma Wright")]

_FIRST = ["Olivia", "Jack", "Amelia", "Harry", "Isla", "Oscar", "Ava", "George", "Mia", "Noah",
          "Sophie", "Leo", "Grace", "Arthur", "Freya", "Henry", "Lily", "Theo", "Ruby", "Alfie"]
_LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
         "Patel", "Wright", "Walker", "Evans", "Thomas", "Roberts", "Hughes", "O'Brien"]
_WORDS = ["Apex", "Harbour", "Northgate", "Kestrel", "Meridian", "Oakfield", "Summit", "Tamar",
          "Clearwater", "Granite", "Beacon", "Riverside", "Ashdown", "Falcon", "Willow"]
_KINDS = ["Engineering", "Supplies", "Logistics", "Foods", "Interiors", "Systems", "Marine",
          "Print", "Electrical", "Joinery"]
_TOWNS = [("Exeter", "Devon", "EX"), ("Plymouth", "Devon", "PL"), ("Bristol", "Avon", "BS"),
          ("Leeds", "West Yorkshire", "LS"), ("Norwich", "Norfolk", "NR"),
          ("Truro", "Cornwall", "TR"), ("York", "North Yorkshire", "YO")]
_STREETS = ["High Street", "Station Road", "Mill Lane", "Church Street", "Park Avenue",
            "Quay Road", "Victoria Way"]


def phone(rng: random.Random) -> str:
    return f"01{rng.randint(100, 999)} {rng.randint(100000, 999999)}"


def mobile(rng: random.Random) -> str:
    return f"07{rng.randint(100, 999)} {rng.randint(100000, 999999)}"


def company_body(rng: random.Random, users: list[str]) -> dict[str, Any]:
    name = f"{rng.choice(_WORDS)} {rng.choice(_KINDS)} {rng.choice(['Ltd', 'Limited', 'plc', 'LLP'])}"
    town, county, area = rng.choice(_TOWNS)
    slug = re.sub(r"[^a-z]", "", name.lower().rsplit(" ", 1)[0])
    return {
        "Name": name, "Telephone": phone(rng), "Website": f"https://www.{slug}.example.co.uk",
        "AccountManagerId": rng.choice(users) if rng.random() < 0.8 else None,
        "MainAddress": {"AddressLine1": f"{rng.randint(1, 180)} {rng.choice(_STREETS)}",
                        "AddressLine3": town, "AddressLine4": county,
                        "Postcode": f"{area}{rng.randint(1, 20)} {rng.randint(1, 9)}"
                                    f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
                                    f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
                        "Country": "United Kingdom"},
    }


def contact_body(rng: random.Random, company_id: int, website: str | None) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = (website or "https://example.com").split("//", 1)[-1].removeprefix("www.")
    return {
        "CompanyId": company_id, "Forename": first, "Surname": last,
        "Email": f"{first.lower()}.{re.sub('[^a-z]', '', last.lower())}@{domain}",
        "PhoneNumber": phone(rng), "MobilePhoneNumber": mobile(rng) if rng.random() < 0.7 else None,
        "Fax": phone(rng) if rng.random() < 0.2 else None,
        "JobTitle": rng.choice(["Director", "Buyer", "Office Manager", "Accounts", None]),
    }
