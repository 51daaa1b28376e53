"""The sandbox's validation: what Unleashed refuses, and the error body it answers with."""
from __future__ import annotations

import re
from typing import Any

from aiohttp import web

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 200
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
WEBSITE = re.compile(
    r"^(https?://)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(?::\d{1,5})?"
    r"(?:[/?#][^\s]*)?$", re.IGNORECASE)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CUSTOMER_TEXT = ("CustomerCode", "CustomerName", "PhoneNumber", "FaxNumber", "MobileNumber",
                 "Email", "Website", "Notes")
ADDRESS_TEXT = ("AddressType", "AddressName", "StreetAddress", "StreetAddress2", "Suburb",
                "City", "Region", "Country", "PostalCode")
CONTACT_TEXT = ("FirstName", "LastName", "EmailAddress", "PhoneNumber", "MobilePhone",
                "FaxNumber")


class Refused(Exception):
    def __init__(self, status: int, description: str, field: str | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.field = status, description, field

    def response(self) -> web.Response:
        body: dict[str, Any] = {"Description": self.description, "DebugInformation": None}
        if self.field:
            body["Items"] = [{"Field": self.field, "Description": self.description}]
        return web.json_response(body, status=self.status)


def text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def validate_customer(c: dict, others: dict[str, dict]) -> None:
    for key in ("CustomerCode", "CustomerName"):
        if not c.get(key):
            raise Refused(400, f"{key} is required.", key)
    if len(c["CustomerCode"]) > 50:
        raise Refused(400, "CustomerCode must be 50 characters or fewer.", "CustomerCode")
    code = c["CustomerCode"].lower()
    if any(o["CustomerCode"].lower() == code and o["Guid"] != c["Guid"]
           for o in others.values()):
        raise Refused(400, f"CustomerCode {c['CustomerCode']!r} is already in use.",
                      "CustomerCode")
    site = c.get("Website") or ""
    if site and (len(site) > 256 or not WEBSITE.match(site)):
        raise Refused(400, f"Website {site!r} is not a valid URL.", "Website")


def apply_contact(contact: dict, body: dict) -> None:
    for key in CONTACT_TEXT:
        if key in body:
            contact[key] = text(body[key]) or ""
    if not (contact.get("FirstName") or contact.get("LastName")):
        raise Refused(400, "A contact needs a FirstName or a LastName.", "FirstName")
    email = contact.get("EmailAddress") or ""
    if email and not EMAIL.match(email):
        raise Refused(400, f"EmailAddress {email!r} is not a valid email address.",
                      "EmailAddress")
