"""What a Tryton user may not do, said in one line with what grants it in trytond 8.2.

Tryton refuses a model the user has no access to with ``trytond.model.exceptions.
AccessError``, a ``UserError`` on the JSON-RPC wire (``["UserError", ['You are not allowed to
access "Account Invoice".', "Within groups: ...", null]]``), translated into the user's
language: its text cannot be told from a validation error. So the connector asks Tryton
(``ir.model.access.get_access``, open to every user) whether the call's model is refused to
this user, and only then turns the error into an AuthError naming the model, the permission
and the group below.

The groups are those of trytond 8.2's own modules (their ``ir.model.access`` records in
``account_invoice/invoice.xml``, ``sale/invoice.xml``...). trytond 8.2 has no group
"Administration": searching ``ir.model.log`` by model (how deletes are found) is allowed only
to a user whose *Administrator* box is ticked (``res.user.administrator``; the search of a
``ResourceAccessMixin`` model without naming its resources); no group grants it.
"""
from __future__ import annotations

READS = frozenset({"search", "search_read", "search_count", "read"})

# (model, permission) -> the trytond 8.2 groups that grant it; a model of ours not listed
# here is open to every user in trytond 8.2 (party.party, party.address,
# party.contact_mechanism, product.*, country.country, company.company for reading)
GRANTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("account.invoice", "read"): ("Accounting", "Sales"),
    ("account.invoice", "write"): ("Accounting",),
    ("account.invoice", "create"): ("Accounting",),
    ("account.invoice", "delete"): ("Accounting",),
}

# the models a write of one model also writes (nested One2Many actions)
NESTED: dict[str, tuple[str, ...]] = {
    "party.party": ("party.address", "party.contact_mechanism"),
}

DELETE_LOG = "ir.model.log"


def permission(method: str) -> str | None:
    """The ``ir.model.access`` permission a model method needs (None: not an access check)."""
    if method in READS:
        return "read"
    if method in ("write", "create", "delete"):
        return method
    return None


def refused(system: str, login: str, model: str, perm: str) -> str:
    """One line: the user may not ``perm`` ``model``, and what grants it."""
    groups = GRANTS.get((model, perm))
    where = "(Administration > Users > Users > Groups)"
    if groups:
        grant = " or ".join(f"'{g}'" for g in groups)
        fix = f"in trytond 8.2 the group {grant} grants it {where}"
    else:
        fix = ("trytond 8.2 gives it to every user, so an access rule of this server takes "
               "it away (Administration > Models > Models Access): give the user a group "
               f"that has it {where}")
    return f"{system}: the Tryton user {login!r} may not {perm} {model}; {fix}"


def delete_log_refused(system: str, login: str) -> str:
    """One line: the user may not search the delete log, and what allows it."""
    return (f"{system}: the Tryton user {login!r} may not search {DELETE_LOG} (Tryton's log "
            "of deletes, read to find deleted records); in trytond 8.2 no group grants it: "
            "tick the user's Administrator box (Administration > Users > Users > "
            "Administrator)")
