"""An aiohttp imitation of the Deltek Ajera API, for tests, demos and benchmarks.

What the public documentation says (help.deltek.com/Product/Ajera/api, the typed client
sbo-inc/ajera) and this sandbox does:

- One endpoint: ``POST /AjeraAPI.ashx?<id>`` (under the base URL) where ``<id>`` is the base64 of
  ``{"DatabaseName": ...}`` copied from Ajera's API settings; JSON in, JSON out.
- ``CreateAPISession`` (``Username``, ``Password``, ``APIVersion`` 1 or 2) answers a
  ``SessionToken`` and its ``SessionExpiration``; ``EndAPISession`` ends it. A session serves one
  API version only.
- Every answer is the envelope ``{ResponseCode, Message, Errors, Content, UsageKey}``, and
  failures come as **HTTP 200** with a non-200 ``ResponseCode`` and ``Errors``.
- ``ListProjects`` (filters ``FilterBySyncToCRM``, ``FilterByStatus``, ``FilterByIDLike``,
  ``FilterByDescriptionEquals``, ``FilterByEarliestModifiedDate``,
  ``FilterByLatestModifiedDate``) answers keys and a few fields; ``GetProjects``
  (``RequestedProjects``) the flat v2 bundle ``Projects``/``InvoiceGroups``/``Phases``/
  ``Resources``; ``UpdateProjects`` takes ``UpdatedProjects`` (key + changed fields) **and**
  ``UnchangedProjects`` (the baseline as read). Clients, contacts and employees the same way
  (``ListClients``/``GetClients``/``UpdateClients``...; ``ListClients`` also filters by
  ``FilterByStatus`` and ``FilterByNameEquals``, the name being the client's ``Description``).
  Each ``FilterBy...Like``/``...Equals`` takes one value. New records carry negative keys, all
  distinct; the answer echoes ``Original<X>Key`` with the new key and ``NumberOf<X>Updated``.
- Paging, off by default: top-level ``PageResults``, ``PageSize`` (10), ``PageNumber`` (1);
  the answer adds ``PageSize``, ``PageNumber``, ``PageCount``.
- ``LastModifiedDate`` in Ajera's own form, ``2023-09-27 09:57:49.607 GMT-04:00 (Eastern
  Daylight Time)``, kept to the millisecond (``zone``: the office's time zone).

Choices where the documentation is silent (uncertain):

- Versions: ``GetProjects``/``UpdateProjects`` need a version 2 session, the client, contact
  and employee methods a version 1 session; ``ListProjects``, ``GetProjectTotals`` and
  ``ListProjectTransactions`` answer both. Another version's method answers ResponseCode 400.
- Sessions last ``session_minutes`` (120) of the sandbox clock; an expired or unknown token
  answers ResponseCode 401 "Session expired"; refused credentials ResponseCode 401 "Invalid
  username or password" (both HTTP 200). An ``<id>`` that is not a base64 JSON object: HTTP 404.
- ``Errors`` items are ``{ErrorID, ErrorMessage}``.
- Lists answer in key order.
- Text filters ignore case (SQL Server's usual collation): ``FilterByDescriptionEquals`` and
  ``FilterByNameEquals`` compare the whole ``Description``, ``FilterByIDLike`` ("LIKE match")
  keeps the IDs that contain the value (``%`` at its ends ignored), as sbo-inc/ajera reads it.
- The baseline is checked: a ``Unchanged<X>`` record whose values differ from the stored ones
  (someone changed it since it was read) refuses the whole call with ResponseCode 409; a
  missing baseline, ResponseCode 400. Every Update call is all-or-nothing.
- Validation (ResponseCode 400, one error per problem): unknown fields; ``Description``
  required (projects: at most 80 characters; clients); ``Status`` one of the documented
  values; ``LastName`` required (contacts, employees); ``Email`` must look like one.
- Project totals: ``GetProjectTotals`` (``RequestedProjects``) answers ``ProjectTotals``
  ``{ProjectKey, SpentLabor, SpentExpense, Billed, Received}``: time, expenses, finalised
  invoices and receipts summed.
- Transactions: ``ListProjectTransactions`` (``FilterByTransactionType`` among ``Time``,
  ``Expense``, ``Invoice``, ``Receipt``, ``FilterByProjectKey``, the modified-date pair)
  answers ``Transactions`` ``{TransactionKey, Type, ProjectKey, Date, Amount, Status,
  LastModifiedDate}``; an invoice is ``Draft`` until finalised (``Final``). Entering time,
  expenses or receipts, or finalising an invoice, does not change the project's own
  ``LastModifiedDate`` (that is what makes AJ-3 need the transactions).
- Instance: ``CreateAPISession`` answers ``DatabaseID``, the sandbox's ``instance_id`` (a
  fresh sandbox is a different database even with the same seed).
- Faults (``connectors/sandbox.py``): every Update* honours ``fail_after_commit`` and
  ``hang_after_commit``; ``drop_fields`` applies to the record lists of ``Content``;
  ``clock_ahead`` moves ``LastModifiedDate``.
"""
from __future__ import annotations

import base64
import binascii
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from connectors.ajera.wire import envelope, millis, parse_date, render_date
from connectors.sandbox import Clock, Sandbox, json_answer

PROJECT_STATUSES = ("Preliminary", "Active", "Hold", "WorkHold", "BillingHold", "Closed",
                    "Marketing")
PERSON_STATUSES = ("Active", "Inactive")
TRANSACTION_TYPES = ("Time", "Expense", "Invoice", "Receipt")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Kind:
    plural: str             # Projects
    key: str                # ProjectKey
    version: int | None     # the API version of Get/Update (None: both)
    listed: tuple[str, ...]  # what List* answers besides the key
    fields: dict[str, type | tuple]


KINDS = {
    "Projects": Kind("Projects", "ProjectKey", 2, ("ID", "Description", "Status"), {
        "ID": str, "Description": str, "Status": str, "SyncToCRM": bool,
        "CreateInCRM": bool, "CRMFinalSync": bool, "Location": str, "ProjectManager": dict,
        "CompanyKey": int}),
    "Clients": Kind("Clients", "ClientKey", 1, ("Description", "Status"), {
        "Description": str, "Status": str, "Phone": str, "Website": str}),
    "Contacts": Kind("Contacts", "ContactKey", 1, ("FirstName", "LastName"), {
        "FirstName": str, "LastName": str, "Title": str, "Email": str, "Phone": str,
        "Company": str}),
    "Employees": Kind("Employees", "EmployeeKey", 1, ("FirstName", "LastName", "Status"), {
        "FirstName": str, "MiddleName": str, "LastName": str, "Title": str, "Email": str,
        "Status": str}),
}

_FIRST = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
_LAST = ["Ortiz", "Park", "Quinn", "Reyes", "Silva", "Tan", "Usman", "Vance", "Wong", "Young"]
_PLACES = ["Riverside", "Harbor", "Maple", "Summit", "Cedar", "Lakeview", "Granite", "Oak"]
_THINGS = ["Library", "Clinic", "School", "Office Tower", "Fire Station", "Museum", "Bridge",
           "Community Center", "Transit Hub", "Residence Hall"]


class Refused(Exception):
    def __init__(self, code: int, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.code, self.errors = code, errors


class AjeraSandbox(Sandbox):
    system = "ajera"

    def __init__(self, *, seed: int = 0, records: int = 0, clock: Clock | None = None,
                 username: str = "sandbox", password: str = "sandbox-password",
                 database: str = "Ajera_Main", session_minutes: float = 120.0,
                 zone: str = "America/New_York") -> None:
        self.username, self.password, self.database = username, password, database
        self.session_minutes = session_minutes
        self.zone = ZoneInfo(zone)
        self.data: dict[str, dict[int, dict]] = {k: {} for k in KINDS}
        self.transactions: dict[int, dict] = {}
        self.modified: dict[tuple[str, int], datetime] = {}     # stored as UTC datetimes
        self.sessions: dict[str, tuple[int, datetime]] = {}
        self._next = {k: 1 for k in [*KINDS, "Transactions"]}
        self._tokens = 0
        super().__init__(seed=seed, records=records, clock=clock)

    @property
    def id_blob(self) -> str:
        return base64.b64encode(orjson.dumps({"DatabaseName": self.database})).decode()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/AjeraAPI.ashx?{self.id_blob}"

    # --- data (also what a user of Ajera does) -------------------------------------------
    def _stamp(self, plural: str, key: int) -> None:
        self.modified[(plural, key)] = millis(self.stamp())

    def add(self, plural: str, **fields: Any) -> dict:
        kind = KINDS[plural]
        key = self._next[plural]
        self._next[plural] += 1
        record = {kind.key: key, **{f: None for f in kind.fields}, **fields}
        if plural == "Projects":
            record["ID"] = record.get("ID") or f"24-{key:05d}"
            for flag in ("SyncToCRM", "CreateInCRM", "CRMFinalSync"):
                record[flag] = bool(record.get(flag))
        self.data[plural][key] = record
        self._stamp(plural, key)
        return record

    def edit(self, plural: str, key: int, **fields: Any) -> dict:
        record = self.data[plural][key]
        record.update(fields)
        self._stamp(plural, key)
        return record

    def add_transaction(self, project_key: int, type_: str, amount: float,
                        status: str | None = None, date: str | None = None) -> dict:
        if type_ not in TRANSACTION_TYPES or project_key not in self.data["Projects"]:
            raise ValueError(f"no {type_} for project {project_key}")
        key = self._next["Transactions"]
        self._next["Transactions"] += 1
        t = {"TransactionKey": key, "Type": type_, "ProjectKey": project_key,
             "Date": date or self.clock.now().date().isoformat(), "Amount": float(amount),
             "Status": status or ("Draft" if type_ == "Invoice" else "Posted")}
        self.transactions[key] = t
        self._stamp("Transactions", key)
        return t

    def finalise_invoice(self, key: int) -> dict:
        t = self.transactions[key]
        t["Status"] = "Final"
        self._stamp("Transactions", key)
        return t

    def totals(self, project_key: int) -> dict:
        sums = {"SpentLabor": 0.0, "SpentExpense": 0.0, "Billed": 0.0, "Received": 0.0}
        for t in self.transactions.values():
            if t["ProjectKey"] != project_key:
                continue
            if t["Type"] == "Time":
                sums["SpentLabor"] += t["Amount"]
            elif t["Type"] == "Expense":
                sums["SpentExpense"] += t["Amount"]
            elif t["Type"] == "Invoice" and t["Status"] == "Final":
                sums["Billed"] += t["Amount"]
            elif t["Type"] == "Receipt":
                sums["Received"] += t["Amount"]
        return {"ProjectKey": project_key, **{k: round(v, 2) for k, v in sums.items()}}

    def project_name(self, rng: random.Random, long: bool = False) -> str:
        name = f"{rng.choice(_PLACES)} {rng.choice(_THINGS)}"
        if long:
            name += f" Renovation and Expansion, Phase {rng.randint(1, 9)}"
        return name

    def seed(self, n: int, rng: random.Random) -> None:
        for i in range(n):
            employee = self.add("Employees", FirstName=rng.choice(_FIRST),
                                LastName=rng.choice(_LAST), Title="Architect",
                                Status="Active")
            employee["Email"] = (f"{employee['FirstName']}.{employee['LastName']}"
                                 f"{employee['EmployeeKey']}@studio.example").lower()
            project = self.add(
                "Projects", Description=f"{self.project_name(rng, long=i % 3 == 0)} {i + 1}",
                Status=rng.choice(["Active", "Active", "Active", "Closed"]),
                SyncToCRM=True, Location=rng.choice(_PLACES),
                ProjectManager={"EmployeeKey": employee["EmployeeKey"],
                                "FirstName": employee["FirstName"], "MiddleName": None,
                                "LastName": employee["LastName"]}, CompanyKey=1)
            self.add_transaction(project["ProjectKey"], "Time", rng.randint(4, 80) * 95.0)
            if i % 2 == 0:
                client = self.add("Clients", Description=f"{rng.choice(_PLACES)} County "
                                  f"{i + 1}", Status="Active", Phone="555-0100")
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                self.add("Contacts", FirstName=first, LastName=last, Title="Owner's rep",
                         Email=f"{first}.{last}{i + 1}@client.example".lower(),
                         Company=client["Description"])

    def touch(self, rng: random.Random) -> str:
        projects = list(self.data["Projects"])
        if not projects:
            self.seed(1, rng)
            return "created a project"
        key = rng.choice(projects)
        if rng.random() < 0.5:
            t = self.add_transaction(key, "Time", rng.randint(1, 8) * 95.0)
            return f"time entered on project {key}: {t['Amount']}"
        self.edit("Projects", key, Location=rng.choice(_PLACES))
        return f"project {key}: Location -> {self.data['Projects'][key]['Location']}"

    # --- serving -------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/AjeraAPI.ashx", self._endpoint)]

    def records_in(self, body: Any) -> list[dict]:
        content = body.get("Content") if isinstance(body, dict) else None
        if not isinstance(content, dict):
            return []
        # records as read (write answers carry only keys, and no LastModifiedDate)
        return [r for key in (*KINDS, "Transactions") for r in content.get(key) or []
                if isinstance(r, dict) and "LastModifiedDate" in r]

    async def _endpoint(self, request: web.Request) -> web.Response:
        if not self._known_database(request.query_string):
            return web.Response(status=404, text="Unknown API URL")
        try:
            body = await request.json(loads=orjson.loads)
        except (ValueError, orjson.JSONDecodeError):
            return _answer(envelope(code=400, message="Bad Request",
                                    errors=["The request body is not JSON"]))
        if not isinstance(body, dict):
            return _answer(envelope(code=400, message="Bad Request",
                                    errors=["The request body is not a JSON object"]))
        method = str(body.get("Method") or "")
        try:
            if method == "CreateAPISession":
                return _answer(envelope(self._create_session(body)))
            if method == "EndAPISession":
                self.sessions.pop(str(body.get("SessionToken")), None)
                return _answer(envelope({}))
            version = self._session(body)
            args = body.get("MethodArguments") or {}
            if not isinstance(args, dict):
                raise Refused(400, ["MethodArguments must be an object"])
            content, paging = await self._call(method, version, args, body)
        except Refused as exc:
            return _answer(envelope(code=exc.code, message="Failure", errors=exc.errors))
        answer = envelope(content)
        answer.update(paging)
        if method.startswith("Update") and await self.after_commit():
            return web.json_response({"Message": "An error has occurred."}, status=500)
        return _answer(answer)

    def _known_database(self, query: str) -> bool:
        try:
            raw = base64.b64decode(query.split("&")[0] + "===", validate=False)
            return orjson.loads(raw).get("DatabaseName") == self.database
        except (binascii.Error, ValueError, orjson.JSONDecodeError, AttributeError):
            return False

    def _create_session(self, body: dict) -> dict:
        if body.get("Username") != self.username or body.get("Password") != self.password:
            raise Refused(401, ["Invalid username or password"])
        version = body.get("APIVersion", 1)
        if version not in (1, 2):
            raise Refused(400, [f"APIVersion {version!r} is not supported"])
        self._tokens += 1
        token = f"sess-{self._tokens}-{self.rng.getrandbits(48):012x}"
        expires = self.clock.now() + timedelta(minutes=self.session_minutes)
        self.sessions[token] = (version, expires)
        return {"SessionToken": token,
                "SessionExpiration": expires.astimezone(self.zone).isoformat(),
                "CompanyName": "Sandbox Architects", "AjeraVersion": "9.90.02",
                "APIURL": f"{self.url}/AjeraAPI.ashx?{self.id_blob}", "UsingICRMobile": False,
                "DatabaseID": self.instance_id}

    def _session(self, body: dict) -> int:
        found = self.sessions.get(str(body.get("SessionToken")))
        if found is None or found[1] <= self.clock.now():
            self.sessions.pop(str(body.get("SessionToken")), None)
            raise Refused(401, ["Session expired or not valid; create a new API session"])
        return found[0]

    async def _call(self, method: str, version: int, args: dict, body: dict
                    ) -> tuple[Any, dict]:
        verb = re.match(r"^(List|Get|Update)", method)
        noun = method[verb.end():] if verb else ""
        if method == "GetProjectTotals":
            keys = _keys(args.get("RequestedProjects"))
            return {"ProjectTotals": [self.totals(k) for k in keys
                                      if k in self.data["Projects"]]}, {}
        if method == "ListProjectTransactions":
            return self._page({"Transactions": self._list_transactions(args)}, body)
        if verb is None or noun not in KINDS:
            raise Refused(400, [f"Unknown method {method!r}"])
        kind = KINDS[noun]
        needs = None if verb.group(1) == "List" and noun == "Projects" else kind.version
        if needs is not None and needs != version:
            raise Refused(400, [f"{method} is not available in API version {version}; "
                                f"create a version {needs} session"])
        if verb.group(1) == "List":
            return self._page({noun: self._list(kind, args)}, body)
        if verb.group(1) == "Get":
            keys = _keys(args.get(f"Requested{noun}"))
            records = [self._render(noun, self.data[noun][k]) for k in keys
                       if k in self.data[noun]]
            content: dict[str, Any] = {noun: records}
            if noun == "Projects":
                content.update(InvoiceGroups=[], Phases=[], Resources=[])
            return content, {}
        return self._update(kind, body, args), {}

    def _page(self, content: dict, body: dict) -> tuple[dict, dict]:
        if not body.get("PageResults"):
            return content, {}
        size = int(body.get("PageSize") or 10)
        number = int(body.get("PageNumber") or 1)
        if size < 1 or number < 1:
            raise Refused(400, ["PageSize and PageNumber must be at least 1"])
        (name, rows), = content.items()
        count = max(1, -(-len(rows) // size))
        return ({name: rows[(number - 1) * size: number * size]},
                {"PageSize": size, "PageNumber": number, "PageCount": count})

    def _modified_filter(self, plural: str, key: int, args: dict) -> bool:
        stamp = self.modified[(plural, key)]
        try:
            early = parse_date(args.get("FilterByEarliestModifiedDate"))
            late = parse_date(args.get("FilterByLatestModifiedDate"))
        except ValueError as exc:
            raise Refused(400, [str(exc)]) from None
        return (early is None or stamp >= early) and (late is None or stamp <= late)

    def _list(self, kind: Kind, args: dict) -> list[dict]:
        out = []
        sync = args.get("FilterBySyncToCRM")
        status = args.get("FilterByStatus")
        like = args.get("FilterByIDLike")
        equals = args.get("FilterByDescriptionEquals")
        name = args.get("FilterByNameEquals")
        for key in sorted(self.data[kind.plural]):
            r = self.data[kind.plural][key]
            if not self._modified_filter(kind.plural, key, args):
                continue
            if status and r.get("Status") not in status:
                continue
            if kind.plural == "Projects":
                if sync and r.get("SyncToCRM") not in sync:
                    continue
                if like and like.strip("%").lower() not in (r.get("ID") or "").lower():
                    continue
                if equals and (r.get("Description") or "").lower() != equals.lower():
                    continue
            if kind.plural == "Clients" and name and \
                    (r.get("Description") or "").lower() != name.lower():
                continue
            out.append({kind.key: key, **{f: r.get(f) for f in kind.listed},
                        "LastModifiedDate": self._date(kind.plural, key)})
        return out

    def _list_transactions(self, args: dict) -> list[dict]:
        types = args.get("FilterByTransactionType")
        projects = args.get("FilterByProjectKey")
        return [{**t, "LastModifiedDate": self._date("Transactions", k)}
                for k, t in sorted(self.transactions.items())
                if (not types or t["Type"] in types)
                and (not projects or t["ProjectKey"] in projects)
                and self._modified_filter("Transactions", k, args)]

    def _date(self, plural: str, key: int) -> str:
        return render_date(self.modified[(plural, key)], self.zone)

    def _render(self, plural: str, record: dict) -> dict:
        out = orjson.loads(orjson.dumps(record))
        out["LastModifiedDate"] = self._date(plural, record[KINDS[plural].key])
        return out

    # --- Update* ---------------------------------------------------------------------------
    def _update(self, kind: Kind, body: dict, args: dict) -> dict:
        noun = kind.plural
        updated = body.get(f"Updated{noun}", args.get(f"Updated{noun}"))
        unchanged = body.get(f"Unchanged{noun}", args.get(f"Unchanged{noun}"))
        if noun == "Projects" and isinstance(unchanged, dict):     # the v2 bundle
            unchanged = unchanged.get("Projects")
        if not isinstance(updated, list) or not isinstance(unchanged, list):
            raise Refused(400, [f"Update{noun} needs both Updated{noun} and Unchanged{noun}"])
        baseline = {r.get(kind.key): r for r in unchanged if isinstance(r, dict)}
        errors: list[str] = []
        new_keys = [r.get(kind.key) for r in updated if isinstance(r, dict)
                    and isinstance(r.get(kind.key), int) and r[kind.key] < 0]
        if len(set(new_keys)) != len(new_keys):
            errors.append("New records must carry distinct negative keys")
        plans: list[tuple[int, dict]] = []
        for r in updated:
            if not isinstance(r, dict) or not isinstance(r.get(kind.key), int):
                errors.append(f"Each of Updated{noun} needs an integer {kind.key}")
                continue
            key = r[kind.key]
            changes = {k: v for k, v in r.items() if k not in (kind.key, "LastModifiedDate")}
            if key > 0:
                current = self.data[noun].get(key)
                if current is None:
                    errors.append(f"{kind.key} {key} does not exist")
                    continue
                base = baseline.get(key)
                if base is None:
                    errors.append(f"{kind.key} {key}: no Unchanged{noun} record for it")
                    continue
                for field, value in base.items():
                    if field in kind.fields and current.get(field) != value:
                        raise Refused(409, [f"{kind.key} {key} was changed by another user "
                                            f"since it was read ({field})"])
                errors += self._validate(kind, {**current, **changes}, changes)
            else:
                errors += self._validate(kind, changes, changes)
            plans.append((key, changes))
        if errors:
            raise Refused(400, errors)
        out = []
        for key, changes in plans:
            if key > 0:
                self.edit(noun, key, **changes)
                out.append({kind.key: key})
            else:
                record = self.add(noun, **changes)
                out.append({f"Original{kind.key}": key, kind.key: record[kind.key]})
        return {noun: out, f"NumberOf{noun}Updated": len(out)}

    def _validate(self, kind: Kind, record: dict, changes: dict) -> list[str]:
        errors = []
        for field, value in changes.items():
            want = kind.fields.get(field)
            if want is None:
                errors.append(f"{field} is not a field of {kind.plural}")
            elif value is not None and not isinstance(value, want):
                errors.append(f"{field} must be a {want.__name__}")
        if errors:
            return errors
        if kind.plural in ("Projects", "Clients"):
            text = record.get("Description")
            if not text or not str(text).strip():
                errors.append("Description is required")
            elif kind.plural == "Projects" and len(text) > 80:
                errors.append("Description can be at most 80 characters")
        if "Status" in changes and changes["Status"] is not None:
            allowed = PROJECT_STATUSES if kind.plural == "Projects" else PERSON_STATUSES
            if changes["Status"] not in allowed:
                errors.append(f"Status must be one of {', '.join(allowed)}")
        if kind.plural in ("Contacts", "Employees") and not record.get("LastName"):
            errors.append("LastName is required")
        email = changes.get("Email")
        if email and not _EMAIL.match(email):
            errors.append(f"Email {email!r} is not an e-mail address")
        return errors


def _keys(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]


def _answer(body: dict) -> web.Response:
    return json_answer(body)
