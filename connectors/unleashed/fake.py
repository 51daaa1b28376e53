"""Plausible, deterministic data for the Unleashed sandbox (seed and touch helpers)."""
from __future__ import annotations

import random
import uuid

_FIRST = ["Aroha", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hemi", "Isla", "Jack",
          "Kiri", "Liam", "Mia", "Noah", "Olivia", "Priya", "Quinn", "Ruby", "Sam", "Tama"]
_LAST = ["Anderson", "Brown", "Chen", "Davies", "Evans", "Fraser", "Gupta", "Harris",
         "Ishikawa", "Jones", "King", "Lee", "Moana", "Nguyen", "O'Brien", "Patel", "Reid",
         "Smith", "Taylor", "Walker"]
_WORDS = ["Harbour", "Kauri", "Southern", "Pacific", "Summit", "Tasman", "Fern", "Silver",
          "Coastal", "Alpine", "Riverside", "Pioneer", "Northern", "Golden", "Blue Ridge"]
_TRADES = ["Traders", "Supplies", "Foods", "Hardware", "Wholesale", "Brewing", "Outfitters",
           "Distributors", "Pharmacy", "Garden Centre"]
_SUFFIX = ["Ltd", "Limited", "Pty Ltd", "& Co", "Group", ""]
_STREETS = ["Queen Street", "Victoria Road", "Beach Road", "High Street", "Main South Road",
            "George Street", "Karangahape Road", "Lambton Quay"]
_CITIES = [("Auckland", "Auckland", "New Zealand", "10"), ("Wellington", "Wellington",
           "New Zealand", "60"), ("Christchurch", "Canterbury", "New Zealand", "80"),
           ("Sydney", "NSW", "Australia", "20"), ("Melbourne", "VIC", "Australia", "30"),
           ("Brisbane", "QLD", "Australia", "40")]
SALESPEOPLE = ["Alice Morgan", "Ben Turner", "Chloe King", "Dev Lal", "Sam Reid"]
_SUBURBS = ["Ponsonby", "Newtown", "Riccarton", "Surry Hills", "Fitzroy", "Paddington", ""]


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_FIRST), rng.choice(_LAST)


def phone(rng: random.Random) -> str:
    return f"+64 {rng.randint(2, 9)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}"


def mobile(rng: random.Random) -> str:
    return f"+64 21 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"


def company_name(rng: random.Random) -> str:
    parts = [rng.choice(_WORDS), rng.choice(_TRADES), rng.choice(_SUFFIX)]
    return " ".join(p for p in parts if p)


def website(rng: random.Random, name: str) -> str:
    slug = "".join(ch for ch in name.lower().split(" ")[0] + name.lower().split(" ")[1]
                   if ch.isalnum())
    return rng.choice([f"www.{slug}.co.nz", f"https://{slug}.com", f"{slug}.com.au", ""])


def address(rng: random.Random) -> dict:
    city, region, country, prefix = rng.choice(_CITIES)
    return {"AddressType": "Postal", "IsDefault": True, "AddressName": "Head office",
            "StreetAddress": f"{rng.randint(1, 400)} {rng.choice(_STREETS)}",
            "StreetAddress2": rng.choice(["", "", f"Level {rng.randint(1, 12)}"]),
            "Suburb": rng.choice(_SUBURBS), "City": city, "Region": region,
            "Country": country, "PostalCode": f"{prefix}{rng.randint(10, 99)}"}


def contact(rng: random.Random, domain: str) -> dict:
    first, last = person(rng)
    return {"Guid": guid(rng), "FirstName": first, "LastName": last,
            "EmailAddress": f"{first.lower()}.{last.lower().replace(chr(39), '')}@{domain}",
            "PhoneNumber": phone(rng), "MobilePhone": rng.choice([mobile(rng), ""]),
            "FaxNumber": rng.choice(["", "", phone(rng)])}


def customer_code(name: str, n: int) -> str:
    letters = "".join(ch for ch in name.upper() if ch.isalpha())[:4] or "CUST"
    return f"{letters}{n:04d}"
