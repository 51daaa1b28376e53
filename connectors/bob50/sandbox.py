"""A Sage BOB 50 accounting file to test against: a generated SQLite database with the default
layout (``layout.py``), and helpers that act on it as a BOB user would.

Not HTTP: ``start()`` creates the file (a temporary one unless ``path`` is given), seeds it when
it is new and ``records`` > 0, and returns its SQLAlchemy URL, which the daemon hands to the
connector's ``url`` setting (``url_setting``). Helpers stamp MODIFIED_AT (and CREATED_AT) from
the sandbox clock as naive Europe/Brussels time in SQLAlchemy's text format.

Generation: ``seed(n, rng)`` adds n third parties (about 85% customers, 15% suppliers; Belgian
names and towns; VAT numbers written as BOB users type them, ``BE 0xxx.xxx.xxx``,
``BE0xxxxxxxxx`` or ``0xxx xxx xxx``; about 3% without one), with the BOBSync tick on the
customers, three personal fields (``PF_SECTOR`` "Sector" and ``PF_EMPLOYEES`` "Employees",
which Sage CRM also has, and ``PF_INTERNAL`` "Interne nota", which it has not) and about
``contacts_per_party`` contacts each. ``vat(i)`` is the number of the i-th generated third
party, so a benchmark can write the same numbers differently in the CRM. One transaction with
executemany: 20,000 third parties take a few seconds.

Instance: a new file gets one ``COMPANY_FILE`` row whose ``FILE_ID`` is a random uuid (not from
the seed), so a file generated again is another instance for ``identity()``.
"""
from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from connectors.sandbox import Clock
from connectors.sql.sandbox import DatabaseFileSandbox

ZONE = ZoneInfo("Europe/Brussels")


SCHEMA = """
CREATE TABLE IF NOT EXISTS THIRD_PARTY (
    TP_ID VARCHAR(10) PRIMARY KEY,
    TP_TYPE VARCHAR(1) NOT NULL DEFAULT 'C' CHECK (TP_TYPE IN ('C', 'S')),
    NAME VARCHAR(60) NOT NULL,
    VAT_NUMBER VARCHAR(20), BOBSYNC INTEGER,
    ADDRESS VARCHAR(60), POSTCODE VARCHAR(10), CITY VARCHAR(40), COUNTRY VARCHAR(3),
    PHONE VARCHAR(20), EMAIL VARCHAR(80), WEBSITE VARCHAR(80), LANGUAGE VARCHAR(2),
    CREATED_AT DATETIME, MODIFIED_AT DATETIME, CRM_ID VARCHAR(20),
    PF_SECTOR VARCHAR(40), PF_EMPLOYEES INTEGER, PF_INTERNAL VARCHAR(200));
CREATE INDEX IF NOT EXISTS THIRD_PARTY_MODIFIED ON THIRD_PARTY (MODIFIED_AT, TP_ID);
CREATE TABLE IF NOT EXISTS CONTACT (
    CONTACT_ID INTEGER PRIMARY KEY AUTOINCREMENT,
    TP_ID VARCHAR(10) NOT NULL REFERENCES THIRD_PARTY (TP_ID) ON DELETE CASCADE,
    FIRST_NAME VARCHAR(40), LAST_NAME VARCHAR(40) NOT NULL, FUNCTION VARCHAR(40),
    PHONE VARCHAR(20), EMAIL VARCHAR(80), MODIFIED_AT DATETIME);
CREATE INDEX IF NOT EXISTS CONTACT_MODIFIED ON CONTACT (MODIFIED_AT, CONTACT_ID);
CREATE TABLE IF NOT EXISTS PERSONAL_FIELD (
    NAME VARCHAR(30) PRIMARY KEY, LABEL VARCHAR(60) NOT NULL, TYPE VARCHAR(10) NOT NULL);
CREATE TABLE IF NOT EXISTS COMPANY_FILE (
    FILE_ID VARCHAR(36) PRIMARY KEY, NAME VARCHAR(60) NOT NULL);
"""
PERSONAL_FIELDS = [("PF_SECTOR", "Sector", "text"), ("PF_EMPLOYEES", "Employees", "number"),
                   ("PF_INTERNAL", "Interne nota", "text")]
TABLES = {"third_parties": ("THIRD_PARTY", "TP_ID"), "contacts": ("CONTACT", "CONTACT_ID")}

_WORDS = ["Bakkerij", "Schrijnwerkerij", "Garage", "Drukkerij", "Brouwerij", "Boekhandel",
          "Transport", "Apotheek", "Slagerij", "Bureau", "Atelier", "Boulangerie", "Imprimerie"]
_NAMES = ["Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens",
          "Wouters", "De Smet", "Dubois", "Lambert", "Dupont", "Martin", "Simon", "Leroy"]
_FORMS = ["BV", "NV", "CommV", "SRL", "SA", "& Zonen"]
_CITIES = [("1000", "Brussel"), ("2000", "Antwerpen"), ("9000", "Gent"), ("3000", "Leuven"),
           ("8000", "Brugge"), ("4000", "Liège"), ("5000", "Namur"), ("3500", "Hasselt"),
           ("2800", "Mechelen"), ("6000", "Charleroi")]
_SECTORS = ["Bouw", "Horeca", "Retail", "Transport", "Diensten", "Industrie"]
_FIRST = ["Jan", "Marie", "Pieter", "Els", "Luc", "An", "Tom", "Sofie", "Luc", "Nathalie"]


def vat(i: int) -> str:
    """The significant digits of the i-th generated third party's VAT number (10 digits)."""
    return f"0{400_000_000 + i * 37:09d}"


def spell(digits: str, style: int) -> str:
    """A VAT number written one of the ways people write it."""
    d = digits
    return [f"BE {d[:4]}.{d[4:7]}.{d[7:]}", f"BE{d}", f"{d[:4]} {d[4:7]} {d[7:]}",
            f"be{d[:4]}.{d[4:7]}.{d[7:]}", f"BE-{d}", d][style % 6]


class Bob50Sandbox(DatabaseFileSandbox):
    system = "bob50"
    SCHEMA = SCHEMA
    TABLES = TABLES
    ZONE = ZONE
    COMPANY = "Sandbox BV"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 path: str | Path | None = None, contacts_per_party: int = 1,
                 no_vat_share: float = 0.03, supplier_share: float = 0.15) -> None:
        super().__init__(seed=seed, records=records, clock=clock, path=path)
        self.contacts_per_party = contacts_per_party
        self.no_vat_share = no_vat_share
        self.supplier_share = supplier_share

    def prepare(self, conn) -> None:
        conn.executemany("INSERT OR IGNORE INTO PERSONAL_FIELD VALUES (?, ?, ?)",
                         PERSONAL_FIELDS)

    # --- generation ----------------------------------------------------------------------
    def seed(self, n: int, rng: random.Random) -> None:
        db = self._db()
        now = self.clock.now()
        start = self._next_number()
        parties, contacts = [], []
        for i in range(n):
            code = f"C{start + i:05d}"
            supplier = rng.random() < self.supplier_share
            postcode, city = rng.choice(_CITIES)
            surname = rng.choice(_NAMES)
            domain = f"{surname.lower().replace(' ', '')}{start + i}.example.be"
            number = None if rng.random() < self.no_vat_share \
                else spell(vat(start + i - 1), rng.randrange(6))
            parties.append((
                code, "S" if supplier else "C", f"{rng.choice(_WORDS)} {surname} "
                f"{rng.choice(_FORMS)}", number, 0 if supplier else 1,
                f"{rng.choice(('Kerkstraat', 'Stationsstraat', 'Rue de la Gare'))} "
                f"{rng.randrange(1, 200)}", postcode, city, "BE",
                f"0{rng.randrange(2, 9)} {rng.randrange(100, 999)} {rng.randrange(10, 99)} "
                f"{rng.randrange(10, 99)}", f"info@{domain}", f"https://www.{domain}",
                rng.choice(("NL", "FR")), self.stamp(now - timedelta(days=rng.randrange(30, 900))),
                self.stamp(now), None, rng.choice(_SECTORS), rng.randrange(1, 250),
                "betaalt laat" if rng.random() < 0.1 else None))
            for _ in range(self.contacts_per_party):
                last = rng.choice(_NAMES)
                contacts.append((code, rng.choice(_FIRST), last, "Zaakvoerder",
                                 None, f"{last.lower().replace(' ', '')}@{domain}",
                                 self.stamp(now)))
        with db:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO THIRD_PARTY VALUES ({','.join('?' * 19)})", parties)
            db.executemany("INSERT INTO CONTACT (TP_ID, FIRST_NAME, LAST_NAME, FUNCTION, PHONE,"
                           " EMAIL, MODIFIED_AT) VALUES (?,?,?,?,?,?,?)", contacts)
            db.execute("COMMIT")

    def _next_number(self) -> int:
        found = self._db().execute(
            "SELECT max(CAST(substr(TP_ID, 2) AS INTEGER)) FROM THIRD_PARTY "
            "WHERE TP_ID LIKE 'C%'").fetchone()[0]
        return (found or 0) + 1

    def touch(self, rng: random.Random) -> str:
        """One edit a BOB user might make; returns what it did."""
        row = self._db().execute("SELECT TP_ID FROM THIRD_PARTY WHERE TP_TYPE = 'C' "
                                 "ORDER BY random() LIMIT 1").fetchone()
        if row is None or rng.random() < 0.3:
            code = self.insert("third_parties", NAME=f"Nieuwe klant {rng.randrange(10**4)}",
                               VAT_NUMBER=spell(vat(rng.randrange(10**6, 2 * 10**6)), 0),
                               BOBSYNC=1)["TP_ID"]
            return f"added customer {code}"
        self.update("third_parties", row[0], PHONE=f"09 {rng.randrange(100, 999)} 00 00")
        return f"changed the phone of customer {row[0]}"

    # --- helpers, as a BOB user ----------------------------------------------------------
    def new_key(self, entity: str, cols: dict[str, Any], now: str) -> None:
        if entity == "third_parties":
            cols.setdefault("CREATED_AT", now)
            cols.setdefault("TP_TYPE", "C")
            if not cols.get("TP_ID"):
                cols["TP_ID"] = f"C{self._next_number():05d}"
