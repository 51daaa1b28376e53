"""A Sage 50 FR company file to test against: a generated SQLite database with the default
layout (``layout.py``), and helpers that act on it as a Sage user would.

Not HTTP: ``start()`` creates the file (a temporary one unless ``path`` is given), seeds it when
it is new and ``records`` > 0, and returns its SQLAlchemy URL (``sqlite:///<path>``), which the
daemon hands to the connector's ``url`` setting (``url_setting``). The helpers use the stdlib
sqlite3 module and stamp MODIFIED_AT (and CREATED_AT) from the sandbox clock as naive
Europe/Paris time, in the text format SQLAlchemy writes (``YYYY-MM-DD HH:MM:SS.ffffff``).

Generation: ``seed(n, rng)`` adds n third parties (about 70% customers, 30% prospects, French
names and towns, some with a sales rep), about ``contacts_per_account`` addresses each (75% of
them contact addresses), ``products`` items (default n // 2: 20% non-stock, 10% inactive, some
with a small PNG picture) and ``invoices_per_account`` invoices per customer, in one
transaction with executemany (10,000 third parties and their rows take a few seconds).

Instance: a new file gets one ``COMPANY_FILE`` row whose ``FILE_ID`` is a random uuid (from
the OS, not the seed), so a file generated again, even at the same path and with the same
seed, is another instance for the connector's ``identity()``.
"""
from __future__ import annotations

import random
import struct
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from connectors.sandbox import Clock
from connectors.sql.sandbox import DatabaseFileSandbox

ZONE = ZoneInfo("Europe/Paris")


SCHEMA = """
CREATE TABLE IF NOT EXISTS THIRD_PARTY (
    ACCOUNT_CODE VARCHAR(17) PRIMARY KEY,
    TYPE VARCHAR(1) NOT NULL DEFAULT 'C' CHECK (TYPE IN ('C', 'P')),
    NAME VARCHAR(69) NOT NULL,
    ADDRESS1 VARCHAR(35), ADDRESS2 VARCHAR(35), POSTCODE VARCHAR(9), CITY VARCHAR(35),
    COUNTRY VARCHAR(35), PHONE VARCHAR(21), EMAIL VARCHAR(69), WEBSITE VARCHAR(69),
    VAT_NUMBER VARCHAR(25), SALES_REP VARCHAR(69), NOTES TEXT,
    CREATED_AT DATETIME, MODIFIED_AT DATETIME, CRM_ID VARCHAR(30));
CREATE INDEX IF NOT EXISTS THIRD_PARTY_MODIFIED ON THIRD_PARTY (MODIFIED_AT, ACCOUNT_CODE);
CREATE TABLE IF NOT EXISTS CONTACT (
    CONTACT_ID INTEGER PRIMARY KEY AUTOINCREMENT,
    ACCOUNT_CODE VARCHAR(17) NOT NULL REFERENCES THIRD_PARTY (ACCOUNT_CODE) ON DELETE CASCADE,
    IS_CONTACT INTEGER NOT NULL DEFAULT 1,
    CIVILITY VARCHAR(10), FIRST_NAME VARCHAR(35), LAST_NAME VARCHAR(35) NOT NULL,
    FUNCTION VARCHAR(35), PHONE VARCHAR(21), MOBILE VARCHAR(21), EMAIL VARCHAR(69),
    MODIFIED_AT DATETIME, CRM_ID VARCHAR(30));
CREATE INDEX IF NOT EXISTS CONTACT_MODIFIED ON CONTACT (MODIFIED_AT, CONTACT_ID);
CREATE INDEX IF NOT EXISTS CONTACT_ACCOUNT ON CONTACT (ACCOUNT_CODE);
CREATE TABLE IF NOT EXISTS ITEM (
    ITEM_CODE VARCHAR(19) PRIMARY KEY,
    DESCRIPTION VARCHAR(69) NOT NULL,
    STOCK_TYPE VARCHAR(1) NOT NULL DEFAULT 'S' CHECK (STOCK_TYPE IN ('S', 'N')),
    STOCK_QTY NUMERIC(14, 3), SALE_PRICE NUMERIC(14, 2), IMAGE BLOB,
    ACTIVE INTEGER NOT NULL DEFAULT 1, MODIFIED_AT DATETIME);
CREATE INDEX IF NOT EXISTS ITEM_MODIFIED ON ITEM (MODIFIED_AT, ITEM_CODE);
CREATE TABLE IF NOT EXISTS INVOICE (
    INVOICE_ID INTEGER PRIMARY KEY AUTOINCREMENT,
    NUMBER VARCHAR(17) NOT NULL UNIQUE,
    ACCOUNT_CODE VARCHAR(17) NOT NULL REFERENCES THIRD_PARTY (ACCOUNT_CODE),
    DATE DATE NOT NULL, DUE_DATE DATE,
    TOTAL_EXCL_TAX NUMERIC(14, 2), TOTAL_INCL_TAX NUMERIC(14, 2), STATUS VARCHAR(20),
    MODIFIED_AT DATETIME);
CREATE INDEX IF NOT EXISTS INVOICE_MODIFIED ON INVOICE (MODIFIED_AT, INVOICE_ID);
CREATE TABLE IF NOT EXISTS COMPANY_FILE (
    FILE_ID VARCHAR(36) PRIMARY KEY, NAME VARCHAR(69) NOT NULL);
"""

TABLES = {"third_parties": ("THIRD_PARTY", "ACCOUNT_CODE"), "contacts": ("CONTACT", "CONTACT_ID"),
          "items": ("ITEM", "ITEM_CODE"), "invoices": ("INVOICE", "INVOICE_ID")}

_WORDS = ["Atelier", "Boulangerie", "Menuiserie", "Garage", "Imprimerie", "Cabinet",
          "Transports", "Pharmacie", "Fromagerie", "Librairie", "Quincaillerie", "Domaine",
          "Brasserie", "Bureau d'études", "Serrurerie", "Charcuterie"]
_SURNAMES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
             "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David",
             "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier"]
_FIRST = ["Jean", "Marie", "Pierre", "Nathalie", "Philippe", "Isabelle", "Michel", "Sylvie",
          "Nicolas", "Catherine", "Julien", "Camille", "Léa", "Hugo", "Chloé", "Antoine"]
_FORMS = ["SARL", "SAS", "EURL", "SA", "& Fils", "et Associés"]
_CITIES = [("75011", "Paris"), ("69003", "Lyon"), ("13001", "Marseille"),
           ("31000", "Toulouse"), ("33000", "Bordeaux"), ("44000", "Nantes"),
           ("67000", "Strasbourg"), ("59000", "Lille"), ("35000", "Rennes"),
           ("21000", "Dijon"), ("37000", "Tours"), ("63000", "Clermont-Ferrand"),
           ("29200", "Brest"), ("74000", "Annecy"), ("84000", "Avignon")]
_STREETS = ["rue de la République", "avenue Jean Jaurès", "boulevard Victor Hugo",
            "place du Marché", "rue des Écoles", "chemin des Vignes", "rue Pasteur"]
_FUNCTIONS = ["Gérant", "Comptable", "Directrice commerciale", "Acheteur", "Assistante",
              "Responsable logistique"]
_REPS = ["Sophie Lambert", "Marc Dupuis", "Claire Fontaine"]
_PRODUCTS = ["Vis inox", "Câble cuivre", "Peinture acrylique", "Planche chêne", "Colle bois",
             "Gants de travail", "Casque", "Perceuse", "Ruban adhésif", "Carton"]
_SERVICES = ["Installation", "Maintenance annuelle", "Formation", "Livraison", "Audit"]
_STATUSES = ["A régler", "Réglée", "Partiellement réglée"]


def tiny_png(rng: random.Random, size: int = 10) -> bytes:
    """A valid RGB PNG of random pixels (a few hundred bytes)."""
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(size * 3))
                   for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Sage50FrSandbox(DatabaseFileSandbox):
    system = "sage50fr"
    SCHEMA = SCHEMA
    TABLES = TABLES
    ZONE = ZONE
    COMPANY = "Sandbox SARL"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 path: str | Path | None = None, contacts_per_account: int = 2,
                 products: int | None = None, invoices_per_account: int = 5,
                 invoices: int | None = None) -> None:
        super().__init__(seed=seed, records=records, clock=clock, path=path)
        self.contacts_per_account = contacts_per_account
        self.products = products
        self.invoices_per_account = invoices_per_account
        self.invoices = invoices        # a total, spread over the customers (benchmarks)

    # --- generation ----------------------------------------------------------------------
    def seed(self, n: int, rng: random.Random) -> None:
        db = self._db()
        now = self.clock.now()
        start = self._next_number("THIRD_PARTY", "ACCOUNT_CODE", "C")
        parties, contacts, items, invoices = [], [], [], []
        customers = []
        for i in range(n):
            code = f"C{start + i:06d}"
            kind = "C" if rng.random() < 0.7 else "P"
            postcode, city = rng.choice(_CITIES)
            surname = rng.choice(_SURNAMES)
            name = f"{rng.choice(_WORDS)} {surname} {rng.choice(_FORMS)}"
            domain = f"{surname.lower().replace('é', 'e')}{i}.example.fr"
            created = now - timedelta(days=rng.randrange(30, 2000))
            parties.append((code, kind, name, f"{rng.randrange(1, 150)} {rng.choice(_STREETS)}",
                            None, postcode, city, "France", _phone(rng), f"contact@{domain}",
                            f"https://www.{domain}" if rng.random() < 0.5 else None,
                            f"FR{rng.randrange(10**10, 10**11)}" if kind == "C" else None,
                            rng.choice(_REPS) if rng.random() < 0.3 else None, None,
                            self.stamp(created), self.stamp(now), None))
            if kind == "C":
                customers.append(code)
            for _ in range(max(0, self.contacts_per_account + rng.choice((-1, 0, 0, 1)))
                           if self.contacts_per_account else 0):
                contacts.append(self._contact_row(rng, code, domain, now))
        products = n // 2 if self.products is None else self.products
        first = self._next_number("ITEM", "ITEM_CODE", "ART")
        images = [tiny_png(rng, rng.choice((8, 10, 12))) for _ in range(min(products, 25))]
        for i in range(products):
            service = rng.random() < 0.2
            label = rng.choice(_SERVICES if service else _PRODUCTS)
            items.append((f"ART{first + i:05d}", f"{label} {i + 1}", "N" if service else "S",
                          None if service else rng.randrange(0, 500),
                          round(rng.uniform(2, 900), 2),
                          rng.choice(images) if images and rng.random() < 0.4 else None,
                          0 if rng.random() < 0.1 else 1, self.stamp(now)))
        number = self._next_number("INVOICE", "NUMBER", "FA")
        total = (self.invoices if self.invoices is not None
                 else self.invoices_per_account * len(customers))
        for i in range(total if customers else 0):
            invoices.append(self._invoice_row(rng, customers[i % len(customers)], number, now))
            number += 1
        with db:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO THIRD_PARTY VALUES ({','.join('?' * 17)})", parties)
            db.executemany(
                "INSERT INTO CONTACT (ACCOUNT_CODE, IS_CONTACT, CIVILITY, FIRST_NAME, LAST_NAME,"
                " FUNCTION, PHONE, MOBILE, EMAIL, MODIFIED_AT) VALUES (?,?,?,?,?,?,?,?,?,?)",
                contacts)
            db.executemany("INSERT INTO ITEM VALUES (?,?,?,?,?,?,?,?)", items)
            db.executemany(
                "INSERT INTO INVOICE (NUMBER, ACCOUNT_CODE, DATE, DUE_DATE, TOTAL_EXCL_TAX,"
                " TOTAL_INCL_TAX, STATUS, MODIFIED_AT) VALUES (?,?,?,?,?,?,?,?)", invoices)
            db.execute("COMMIT")

    def _contact_row(self, rng: random.Random, code: str, domain: str, now: datetime) -> tuple:
        first, last = rng.choice(_FIRST), rng.choice(_SURNAMES)
        civility = rng.choice(("M.", "Mme"))
        is_contact = 1 if rng.random() < 0.75 else 0
        email = f"{first.lower()}.{last.lower()}@{domain}".replace("é", "e").replace("è", "e")
        return (code, is_contact, civility, first, last, rng.choice(_FUNCTIONS), _phone(rng),
                _phone(rng, mobile=True) if rng.random() < 0.6 else None, email,
                self.stamp(now))

    def _invoice_row(self, rng: random.Random, code: str, number: int, now: datetime) -> tuple:
        day = (now - timedelta(days=rng.randrange(0, 365))).date()
        excl = round(rng.uniform(50, 5000), 2)
        return (f"FA{number:06d}", code, day.isoformat(), (day + timedelta(days=30)).isoformat(),
                excl, round(excl * 1.2, 2), rng.choice(_STATUSES), self.stamp(now))

    def _next_number(self, table: str, column: str, prefix: str) -> int:
        found = self._db().execute(
            f"SELECT max(CAST(substr({column}, {len(prefix) + 1}) AS INTEGER)) FROM {table} "
            f"WHERE {column} LIKE ?", (prefix + "%",)).fetchone()[0]
        return (found or 0) + 1

    def touch(self, rng: random.Random) -> str:
        """One edit a Sage user might make; returns what it did."""
        db = self._db()
        pick = lambda sql: db.execute(sql + " ORDER BY random() LIMIT 1").fetchone()  # noqa
        action = rng.choice(["phone", "convert", "contact", "deactivate", "invoice",
                             "delete_invoice", "prospect"])
        if action == "phone" and (r := pick("SELECT ACCOUNT_CODE FROM THIRD_PARTY "
                                            "WHERE TYPE = 'C'")):
            self.update("third_parties", r[0], PHONE=_phone(rng))
            return f"changed the phone of customer {r[0]}"
        if action == "convert" and (r := pick("SELECT ACCOUNT_CODE FROM THIRD_PARTY "
                                              "WHERE TYPE = 'P'")):
            self.update("third_parties", r[0], TYPE="C")
            return f"converted prospect {r[0]} to a customer"
        if action == "contact" and (r := pick("SELECT ACCOUNT_CODE FROM THIRD_PARTY")):
            row = self._contact_row(rng, r[0], "example.fr", self.clock.now())
            names = ("ACCOUNT_CODE", "IS_CONTACT", "CIVILITY", "FIRST_NAME", "LAST_NAME",
                     "FUNCTION", "PHONE", "MOBILE", "EMAIL")
            added = self.insert("contacts", **dict(zip(names, row)))
            return f"added contact {added['CONTACT_ID']} to {r[0]}"
        if action == "deactivate" and (r := pick("SELECT ITEM_CODE FROM ITEM WHERE ACTIVE = 1")):
            self.update("items", r[0], ACTIVE=0)
            return f"put item {r[0]} to sleep"
        if action == "invoice" and (r := pick("SELECT ACCOUNT_CODE FROM THIRD_PARTY "
                                              "WHERE TYPE = 'C'")):
            number = self._next_number("INVOICE", "NUMBER", "FA")
            row = self._invoice_row(rng, r[0], number, self.clock.now())
            names = ("NUMBER", "ACCOUNT_CODE", "DATE", "DUE_DATE", "TOTAL_EXCL_TAX",
                     "TOTAL_INCL_TAX", "STATUS")
            added = self.insert("invoices", **dict(zip(names, row)))
            return f"added invoice {added['NUMBER']} for {r[0]}"
        if action == "delete_invoice" and (r := pick("SELECT INVOICE_ID FROM INVOICE")):
            self.delete("invoices", r[0])
            return f"deleted invoice {r[0]}"
        code = self.insert("third_parties", TYPE="P", NAME=f"Prospect {rng.choice(_SURNAMES)}",
                           CITY=rng.choice(_CITIES)[1], PHONE=_phone(rng))["ACCOUNT_CODE"]
        return f"added prospect {code}"

    # --- helpers, as a Sage user ---------------------------------------------------------
    def new_key(self, entity: str, cols: dict[str, Any], now: str) -> None:
        if entity == "third_parties":
            cols.setdefault("CREATED_AT", now)
            if not cols.get("ACCOUNT_CODE"):
                table, key = TABLES[entity]
                cols["ACCOUNT_CODE"] = f"C{self._next_number(table, key, 'C'):06d}"


def _phone(rng: random.Random, mobile: bool = False) -> str:
    head = rng.choice(("06", "07")) if mobile else rng.choice(("01", "02", "03", "04", "05"))
    return head + "".join(f" {rng.randrange(100):02d}" for _ in range(4))
