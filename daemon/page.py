"""The status page: server-rendered HTML from the status document (daemon/status.py).

``page(doc, buttons=...)`` is the whole page; ``body(doc)`` the part ``GET /partial`` gives the
page's script, which swaps it in every 2 s while a run is under way and every 30 s otherwise
(DT-10), keeping the runs a person opened open. Systems are named as the configuration names
them, times are relative ("3 min ago") with the absolute time in the title, counts carry
labels (daemon/describe.py). Buttons post JSON to ``/api/integrations/{name}/...`` with the
token typed into the page (kept in the tab's session storage, never sent back by the server).
Every value is escaped; nothing here sees a secret.

A first run waiting for approval shows its stored plan per direction (BB-3, daemon/preview.py
via the status document) with "The synchronisation data is correct" (BB-9);
``preview_page`` is that plan uncut, ``links_page`` one keyset page of a flow's correspondence
table (daemon/links.py) with "No sync" / "Not this time" / "Lift" (BB-6, BB-7). Each page's
``#status`` names the address its refresh fetches (``data-partial``; ``/partial`` by default).
"""
from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import quote

import orjson

from daemon import describe

PREVIEW_ROWS = 50    # of each list of a first run's preview on the main page


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def span(seconds: float) -> str:
    """3 s, 4 min, 2 h 5 min, 3 days."""
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h" + (f" {m} min" if m and h < 10 else "")
    d = s // 86400
    return f"{d} day{'s' if d != 1 else ''}"


def relative(when: datetime, now: datetime) -> str:
    delta = (now - when).total_seconds()
    if abs(delta) < 5:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def ago(text: str | None, now: datetime, empty: str = "—") -> str:
    """``<time>`` with a relative text and the absolute UTC time in its title."""
    when = _parse(text)
    if when is None:
        return _e(text) if text else f'<span class="muted">{_e(empty)}</span>'
    utc = when.astimezone(timezone.utc)
    return (f'<time datetime="{_e(utc.isoformat())}" title="{utc:%Y-%m-%d %H:%M:%S} UTC">'
            f'{_e(relative(utc, now))}</time>')


def took(item: Mapping[str, Any]) -> str:
    """A run's or step's duration: its ``seconds``, else the difference of its stamps."""
    secs = item.get("seconds")
    if secs is None:
        a, b = _parse(item.get("started_at")), _parse(item.get("finished_at"))
        if a is None or b is None:
            return ""
        secs = max(0.0, (b - a).total_seconds())
    return f"{secs:.1f} s" if secs < 60 else span(secs)


def _badge(status: str, text: str | None = None) -> str:
    return f'<span class="b {_e(status)}">{_e(text or status)}</span>'


def _button(label: str, url: str, body: Mapping | None = None, cls: str = "") -> str:
    data = f' data-body="{_e(orjson.dumps(body).decode())}"' if body else ""
    return (f'<button type="button" class="act {cls}" data-url="{_e(url)}"{data}>'
            f'{_e(label)}</button>')


def _counts(counts: Mapping[str, Any], names: Mapping[str, str]) -> str:
    items = describe.labelled_counts(counts, names)
    if not items:
        return '<span class="muted">—</span>'
    return " ".join(
        f'<span class="c{" warn" if k in describe.ATTENTION else ""}" data-count="{_e(k)}">'
        f'{_e(label)} <b>{_e(v)}</b></span>' for k, label, v in items)


def _record(r: Mapping[str, Any]) -> str:
    """A record by name and key where its link knows them, and its id."""
    parts = []
    if r.get("name"):
        parts.append(f'<b class="name">{_e(r["name"])}</b>')
    if r.get("key"):
        parts.append(f'<span class="key">{_e(r["key"])}</span>')
    if not parts:
        parts.append('<span class="muted">not linked yet</span>')
    return (" · ".join(parts) + f' <span class="id muted">id {_e(r["record"])}</span>')


def _fields(values: Mapping[str, Any] | None) -> str:
    """A record's fields in one line: ``NAME Bakkerij Peeters · VAT_NUMBER BE0412…``."""
    items = [f'<span class="f"><span class="k">{_e(k)}</span> {_e(v)}</span>'
             for k, v in (values or {}).items() if v not in (None, "")]
    return " · ".join(items) or '<span class="muted">—</span>'


def _quote(text: Any) -> str:
    return quote(str(text), safe="")


def links_url(integration: str, flow: str, **query: Any) -> str:
    """The links page of a flow (its correspondence table), e.g. ``after=`` a link id."""
    q = "&".join(f"{k}={_quote(v)}" for k, v in query.items() if v is not None)
    return (f"/integrations/{_quote(integration)}/flows/{_quote(flow)}/links"
            + (f"?{q}" if q else ""))


def preview_url(integration: str) -> str:
    return f"/integrations/{_quote(integration)}/preview"


def _table(head: list[str], rows: list[str], cls: str) -> str:
    if not rows:
        return '<p class="muted none">none</p>'
    return (f'<table class="{cls}"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr>" + "".join(rows) + "</table>")


# --- one integration ---------------------------------------------------------------------------
class _Integration:
    def __init__(self, name: str, d: Mapping[str, Any], now: datetime) -> None:
        self.name, self.d, self.now = name, d, now
        systems = d.get("systems") or {}
        self.names = {side: (systems.get(side) or {}).get("name") or side
                      for side in ("left", "right")}
        self.api = f"/api/integrations/{name}"

    def system(self, side: str) -> str:
        return f'<span class="sys">{_e(self.names.get(side, side))}</span>'

    def render(self) -> str:
        d = self.d
        return "\n".join([
            f'<section class="integration" data-name="{_e(self.name)}" '
            f'data-paused="{1 if d.get("paused") else 0}">',
            self.header(), self.notices(), self.when(), self.flows(), self.runs(), self.log(),
            self.gates(PREVIEW_ROWS), self.record_errors(), self.reviews(), self.held(),
            self.exclusions(), self.jobs(),
            "</section>"])

    def header(self) -> str:
        d = self.d
        badges = []
        if not d.get("enabled", True):
            badges.append(_badge("off", "disabled"))
        if d.get("running"):
            badges.append(_badge("running"))
        if d.get("paused"):
            badges.append(_badge("paused"))
        if d.get("health") == "failing" or d.get("failure"):
            badges.append(_badge("failed", "failing"))
        pause = (_button("Resume", f"{self.api}/resume", cls="resume") if d.get("paused")
                 else _button("Pause", f"{self.api}/pause", cls="pause"))
        systems = d.get("systems") or {}
        line = " ⇄ ".join(
            f'<b>{_e(self.names[s])}</b>'
            + (f' <span class="muted">({_e(systems[s]["type"])})</span>'
               if systems.get(s, {}).get("type") not in (None, self.names[s]) else "")
            for s in ("left", "right"))
        buttons = (f'{_button("Run now", f"{self.api}/run", cls="run")}{pause}'
                   if d.get("enabled", True) else "")
        return (f'<div class="head"><h2>{_e(self.name)} {" ".join(badges)}</h2>'
                f'<div class="buttons">{buttons}</div></div><p class="systems">{line}</p>')

    def notices(self) -> str:
        d, out = self.d, []
        f = d.get("failure")
        if f:
            streak = f" ({f['runs']} runs in a row)" if f.get("runs", 1) > 1 else ""
            out.append(f'<div class="notice failure"><b>Failing</b> since '
                       f'{ago(f.get("since"), self.now)}{streak}: run #{_e(f["run"])} '
                       f'{ago(f.get("at"), self.now)} — <span class="reason">'
                       f'{_e(f["message"])}</span></div>')
        p = d.get("paused")
        if p:
            why = f' ({_e(p["reason"])})' if p.get("reason") else ""
            out.append(f'<div class="notice paused"><b>Paused</b> {ago(p.get("at"), self.now)}'
                       f'{why}: scheduled runs and webhooks wait until it is resumed; '
                       f'<i>Run now</i> still runs it.</div>')
        return "".join(out)

    def when(self) -> str:
        last = self.d.get("last_run")
        if last is None:
            text = "Last run: <b>never</b>"
        else:
            text = (f'Last run: <b>#{_e(last["id"])}</b> {_badge(last["status"])} '
                    f'{ago(last["started_at"], self.now)}')
            if last.get("finished_at"):
                text += f' · took {_e(took(last))}'
        nxt = self.d.get("next_run")
        when = ago(nxt, self.now) if _parse(nxt) else _e(nxt or "—")
        if self.d.get("paused"):
            when = f'<b>paused</b> <span class="muted">(scheduled {when})</span>'
        return f'<p class="when">{text} · Next run: {when}</p>'

    def flows(self) -> str:
        items = "".join(f'<li data-flow="{_e(f["name"])}"><b>{_e(f["name"])}</b>: '
                        f'{_e(f["description"])} <a class="links" '
                        f'href="{_e(links_url(self.name, f["name"]))}">linked pairs</a></li>'
                        for f in self.d.get("flows") or [])
        return f'<h3>Flows</h3><ul class="flows">{items}</ul>' if items else ""

    def log(self) -> str:
        """The integration log (AJ-5): each run's message, and each step that has something
        to say (a batch and its backlog, "Sync Completed", a held flow, errors)."""
        entries = self.d.get("log")
        if not entries:
            return ""
        rows = []
        for e in entries:
            rows.append(f'<tr class="log-run"><td>#{_e(e["run"])}</td>'
                        f'<td>{ago(e["started_at"], self.now)}</td>'
                        f'<td>{_badge(e["status"])}</td><td>({_e(e["trigger"])})</td>'
                        f'<td>{_e(e["message"] or "")}</td></tr>')
            for st in e["steps"]:
                if st["message"] or st["status"] != "ok":
                    rows.append(f'<tr class="log-step"><td></td><td></td>'
                                f'<td>{_badge(st["status"])}</td><td>{_e(st["flow"])}</td>'
                                f'<td>{_e(st["message"] or "")}</td></tr>')
        return '<h3>Integration log</h3>' + _table(
            ["run", "started", "status", "flow", "message"], rows, "log")

    def runs(self) -> str:
        runs = self.d.get("runs")
        if runs is None:                         # an older document: the last run only
            runs = [self.d["last_run"]] if self.d.get("last_run") else []
        if not runs:
            return '<h3>Runs</h3><p class="muted none">none yet</p>'
        errors_by_run: dict[Any, list] = {}
        for e in self.d.get("record_errors") or []:
            errors_by_run.setdefault(e.get("run"), []).append(e)
        out = [f'<h3>Recent runs ({len(runs)})</h3><div class="runs">']
        for i, r in enumerate(runs):
            out.append(self.run(r, open_=(i == 0), errors=errors_by_run.get(r["id"], [])))
        out.append("</div>")
        return "".join(out)

    def run(self, r: Mapping[str, Any], *, open_: bool, errors: list) -> str:
        total: dict[str, int] = {}
        for s in r["steps"]:
            for k, v in (s.get("counts") or {}).items():
                if isinstance(v, (int, float)):
                    total[k] = total.get(k, 0) + int(v)
        summary_counts = describe.labelled_counts(
            {k: v for k, v in total.items() if not k.startswith("read_") and k != "unchanged"},
            self.names)[:4]
        summary = ", ".join(f"{label} {v}" for _, label, v in summary_counts)
        length = took(r)
        head = (f'<summary><span class="rid">#{_e(r["id"])}</span> {_badge(r["status"])} '
                f'<span class="trigger">{_e(r["trigger"])}</span> '
                f'{ago(r["started_at"], self.now)}'
                + (f' · {_e(length)}' if length else "")
                + (f' · <span class="muted">{_e(summary)}</span>' if summary else "")
                + "</summary>")
        rows = []
        for s in r["steps"]:
            rows.append(
                f'<tr class="step" data-flow="{_e(s["flow"])}" data-status="{_e(s["status"])}">'
                f'<td>{_e(s["flow"])}</td><td>{_badge(s["status"])}</td>'
                f'<td class="counts">{_counts(s.get("counts") or {}, self.names)}</td>'
                f'<td>{_e(took(s))}</td>'
                f'<td class="msg">{_e(s.get("message"))}</td></tr>')
        body = [head]
        if r.get("message"):
            body.append(f'<p class="run-msg">{_e(r["message"])}</p>')
        body.append(_table(["flow", "status", "counts", "took", "message"], rows, "steps")
                    if rows else '<p class="muted none">no steps</p>')
        if errors:
            items = "".join(f'<li>{self.system(e["side"])} {_e(e["flow"])}: {_record(e)} — '
                            f'{_e(e["message"])}</li>' for e in errors)
            body.append(f'<p class="sub">Record errors still open from this run '
                        f'({len(errors)}):</p><ul class="run-errors">{items}</ul>')
        return (f'<details class="run" data-run="{_e(r["id"])}" data-status="{_e(r["status"])}"'
                f'{" open" if open_ else ""}>' + "".join(body) + "</details>")

    def record_errors(self) -> str:
        errors = self.d.get("record_errors") or []
        per_flow: dict[str, int] = {}
        for e in errors:
            per_flow[e["flow"]] = per_flow.get(e["flow"], 0) + 1
        retry_all = "".join(_button(f"Retry all {n} in {flow}", f"{self.api}/retry",
                                    {"flow": flow}, "retry-all")
                            for flow, n in per_flow.items() if n > 1)
        rows = []
        for e in errors:
            target = {"flow": e["flow"], "side": e["side"], "id": e["record"]}
            if e.get("quarantined"):
                state = '<span class="b failed">quarantined: not retried</span>'
            elif e.get("retry") and not e.get("count"):
                state = '<span class="b retry">retry queued: read again next run</span>'
            elif e.get("retry"):
                state = '<span class="muted">(read again each run)</span>'
            else:
                state = '<span class="muted">(not retried by itself)</span>'
            if e.get("count"):
                state += f'<span class="muted"> · failed {_e(e["count"])}×</span>'

            rows.append(
                f'<tr class="record-error" data-flow="{_e(e["flow"])}" '
                f'data-side="{_e(e["side"])}" data-record="{_e(e["record"])}">'
                f'<td>{_record(e)}</td><td>{self.system(e["side"])}</td><td>{_e(e["flow"])}</td>'
                f'<td class="msg">{_e(e["message"])} {state}</td>'
                f'<td>{ago(e.get("updated_at"), self.now)}</td>'
                f'<td class="buttons">{_button("Retry", f"{self.api}/retry", target, "retry")}'
                f'{_button("Exclude", f"{self.api}/exclude", target, "exclude")}</td></tr>')
        return (f'<h3>Record errors ({len(errors)}) {retry_all}</h3>'
                + _table(["record", "in", "flow", "error", "last seen", ""], rows,
                         "record-errors"))

    def reviews(self) -> str:
        reviews = self.d.get("reviews") or []
        rows = [f'<tr class="review"><td>{_e(r["record"])}</td><td>{self.system(r["side"])}</td>'
                f'<td>{_e(r["flow"])}</td><td>{_e(r["reason"])}</td>'
                f'<td>{_e(", ".join(str(c) for c in r.get("candidates") or []))}</td></tr>'
                for r in reviews]
        if not rows:
            return ""
        return (f'<h3>Ambiguous matches awaiting review ({len(reviews)})</h3>'
                + _table(["record", "in", "flow", "why", "candidates"], rows, "reviews"))

    def gates(self, limit: int | None) -> str:
        """What stops the integration until a person approves it: a first run's stored plan
        (its preview per direction, each list cut at ``limit`` rows; the preview page shows
        them all), a system that is not the instance the state was built with."""
        gates = self.d.get("gates") or []
        if not gates:
            return ""
        titles = {"first_run": "First run waiting for approval",
                  "instance": "A system is not the one this state was built with"}
        parts = []
        for g in gates:
            counts = ""
            for flow, c in sorted((g.get("counts") or {}).items()):
                counts += (f'<tr><td>{_e(flow)}</td><td>{_counts(c, self.names)}</td></tr>')
            first = g["kind"] == "first_run"
            # the first run's button approves that gate only (BB-9), as `approve --first-run`
            button = ("" if g["approved"] else
                      _button("The synchronisation data is correct",
                              f"{self.api}/approve-first-run", cls="approve-first-run")
                      if first else _button("It is the same system: go on",
                                            f"{self.api}/approve", cls="approve-gate"))
            state = "approved: the next run goes on" if g["approved"] else "waiting"
            parts.append(f'<div class="gate" data-kind="{_e(g["kind"])}">'
                         f'<h3>{_e(titles.get(g["kind"], g["kind"]))} ({state}) {button}</h3>'
                         f'<p>{_e(g["message"])}</p>'
                         + (f'<table class="plan"><tr><th>flow</th><th>the plan</th></tr>'
                            f'{counts}</table>' if counts else "")
                         + (self.preview(g, limit) if first and g.get("preview") else "")
                         + '</div>')
        return "".join(parts)

    # --- BB-3: the first run's plan per direction -----------------------------------------
    def _excluded(self) -> dict[tuple[str, str, str], str]:
        """(flow, side, record) -> "never" / "skip_once" of the records left out."""
        return {(x["flow"], x["side"], str(x["record"])): x["mode"]
                for x in self.d.get("exclusions") or [] if x["mode"] in ("never", "skip_once")}

    def _mode_buttons(self, flow: str, side: str, rid: Any, mode: str | None) -> str:
        """"No sync" / "Not this time" on a record (and its partner), or "Lift" (BB-6, BB-7)."""
        target = {"flow": flow, "side": side, "id": str(rid)}
        url = f"{self.api}/links"
        if mode:
            return (_badge("waiting", "no sync" if mode == "never" else "not this time")
                    + _button("Lift", url, {**target, "mode": "lift"}, "lift"))
        return (_button("No sync", url, {**target, "mode": "no_sync"}, "no-sync")
                + _button("Not this time", url, {**target, "mode": "not_this_time"},
                          "not-this-time"))

    def _listed(self, rows: list[str], limit: int | None, more: str) -> str:
        shown = rows if limit is None else rows[:limit]
        out = _table(["", "record", "data", ""], shown, "preview-rows")
        if len(shown) < len(rows):
            out += (f'<p class="muted more">… and {len(rows) - len(shown)} more: '
                    f'<a href="{_e(more)}">the whole preview</a></p>')
        return out

    def preview(self, g: Mapping[str, Any], limit: int | None) -> str:
        """What the first run would create and update each way, and the pairs it would link
        with both records' data; each record with its "No sync" / "Not this time"."""
        v, ex = g["preview"], self._excluded()
        more = preview_url(self.name)
        names: dict[tuple[str, str], str] = {}        # the linked records' names, for updates
        for link in v["link"]:
            for side in ("left", "right"):
                names[(side, str(link[side]))] = link[f"{side}_name"]
        out = ['<div class="preview"><p class="muted">What the first run would do, from its '
               'stored plan. <i>No sync</i> and <i>Not this time</i> take a record out: '
               '<i>Run now</i> makes the plan again without it.</p>']
        if g.get("actions") and g.get("rows", 0) < g["actions"]:
            out.append(f'<p class="muted">The first {_e(g["rows"])} of {_e(g["actions"])} '
                       f'actions were stored.</p>')
        for key, src, dst in (("to_right", "left", "right"), ("to_left", "right", "left")):
            part = v[key]
            rows = []
            for c in part["create"]:
                mode = ex.get((c["flow"], src, str(c["from"])))
                rows.append(
                    f'<tr class="create" data-side="{src}" data-record="{_e(c["from"])}">'
                    f'<td>create</td><td><b class="name">{_e(c["name"] or "(no name)")}</b> '
                    f'<span class="id muted">from {_e(self.names[src])} id {_e(c["from"])}</span>'
                    f'</td><td>{_fields(c["fields"])}</td><td class="buttons">'
                    f'{self._mode_buttons(c["flow"], src, c["from"], mode)}</td></tr>')
            for u in part["update"]:
                name = names.get((dst, str(u["id"])))
                rows.append(
                    f'<tr class="update" data-side="{dst}" data-record="{_e(u["id"])}">'
                    f'<td>update</td><td>' + (f'<b class="name">{_e(name)}</b> ' if name else "")
                    + f'<span class="id muted">id {_e(u["id"])}</span></td>'
                    f'<td>{_fields(u["fields"])}</td><td></td></tr>')
            out.append(f'<h4 data-direction="{key}">{self.system(src)} → {self.system(dst)}: '
                       f'{len(part["create"])} to create, {len(part["update"])} to update</h4>'
                       + self._listed(rows, limit, more))
        rows = []
        for link in v["link"]:
            mode = ex.get((link["flow"], "left", str(link["left"]))) or ex.get(
                (link["flow"], "right", str(link["right"])))
            data = link.get("data") or {}
            cells = "".join(
                f'<td><b class="name">{_e(link[f"{side}_name"])}</b> '
                f'<span class="id muted">id {_e(link[side])}</span>'
                f'<div class="data">{_fields(data.get(side) or {})}</div></td>'
                for side in ("left", "right"))
            rows.append(f'<tr class="link" data-left="{_e(link["left"])}" '
                        f'data-right="{_e(link["right"])}"><td>link</td>{cells}'
                        f'<td class="buttons">'
                        f'{self._mode_buttons(link["flow"], "left", link["left"], mode)}'
                        f'</td></tr>')
        shown = rows if limit is None else rows[:limit]
        out.append(f'<h4 data-direction="link">Linked: {len(v["link"])} already in both, '
                   f'with their data</h4>'
                   + _table(["", self.names["left"], self.names["right"], ""], shown,
                            "preview-links"))
        if len(shown) < len(rows):
            out.append(f'<p class="muted more">… and {len(rows) - len(shown)} more: '
                       f'<a href="{_e(more)}">the whole preview</a></p>')
        if v.get("other"):
            items = "".join(f'<li>{_e(o.get("action"))} {_e(o.get("side", ""))} '
                            f'{_e(o.get("id", ""))} <span class="muted">{_e(o.get("why", ""))}'
                            f'</span></li>' for o in v["other"])
            out.append(f'<h4>Other ({len(v["other"])})</h4><ul class="other">{items}</ul>')
        out.append("</div>")
        return "".join(out)

    def held(self) -> str:
        held = self.d.get("held_deletes") or []
        waiting = [h for h in held if not h["approved"]]
        flows = sorted({h["flow"] for h in waiting})
        buttons = ""
        if waiting:
            buttons = _button(f"Approve {len(waiting)} held delete"
                              f"{'s' if len(waiting) != 1 else ''}", f"{self.api}/approve",
                              cls="approve")
            if len(flows) > 1:
                buttons += "".join(_button(f"Approve {f} only", f"{self.api}/approve",
                                           {"flow": f}, "approve-flow") for f in flows)
        rows = [f'<tr class="held" data-flow="{_e(h["flow"])}"><td>{_record(h)}</td>'
                f'<td>{self.system(h["target"])}</td><td>{_e(h["flow"])}</td>'
                f'<td>{_e(h["action"])}</td><td>#{_e(h["run"])}</td>'
                f'<td>{"approved: the next run applies it" if h["approved"] else "waiting"}'
                f'</td></tr>' for h in held]
        if not rows:
            return ""
        return (f'<h3>Deletes held by the circuit-breaker ({len(waiting)} waiting) {buttons}'
                f'</h3>' + _table(["record", "in", "flow", "action", "run", ""], rows, "held"))

    def exclusions(self) -> str:
        ex = self.d.get("exclusions") or []
        modes = {"never": "left out until included", "skip_once": "left out of the next run",
                 "revisit": "included again: read next run"}
        rows = []
        for x in ex:
            target = {"flow": x["flow"], "side": x["side"], "id": x["record"]}
            action = (_button("Include", f"{self.api}/include", target, "include")
                      if x["mode"] in ("never", "skip_once") else "")
            rows.append(
                f'<tr class="exclusion" data-record="{_e(x["record"])}"><td>{_record(x)}</td>'
                f'<td>{self.system(x["side"])}</td><td>{_e(x["flow"])}</td>'
                f'<td>{_e(modes.get(x["mode"], x["mode"]))}</td><td class="msg">'
                f'{_e(x["reason"])}</td><td>{ago(x.get("created_at"), self.now)}</td>'
                f'<td class="buttons">{action}</td></tr>')
        return (f'<h3>Exclusions ({len(rows)})</h3>'
                + _table(["record", "in", "flow", "", "reason", "since", ""], rows,
                         "exclusions"))

    def jobs(self) -> str:
        jobs = self.d.get("jobs") or []
        if not jobs:
            return ""
        rows = [f'<tr class="job"><td>{_e(j["name"])}</td><td>{_e(j["flow"])}</td>'
                f'<td><code>{_e(j["cron"])}</code></td>'
                f'<td>{"complete pass" if j.get("full") else "changes"}</td>'
                f'<td>{ago(j.get("next_run"), self.now)}</td></tr>' for j in jobs]
        return f'<h3>Jobs ({len(jobs)})</h3>' + _table(
            ["job", "flow", "schedule (cron)", "reads", "next run"], rows, "jobs")


def body(doc: Mapping[str, Any]) -> str:
    """The part of the page that refreshes (also ``GET /partial``)."""
    now = _parse(doc.get("generated_at")) or datetime.now(timezone.utc)
    running = bool(doc.get("running"))
    parts = [f'<div id="status" data-running="{1 if running else 0}">',
             f'<p class="muted" id="updated">updated {ago(doc.get("generated_at"), now)} · '
             f'refreshes every {"2 s (a run is under way)" if running else "30 s"}</p>']
    for name, d in doc["integrations"].items():
        parts.append(_Integration(name, d, now).render())
    parts.append("</div>")
    return "\n".join(parts)


def _shell(title: str, body_html: str, *, buttons: bool, back: bool = False) -> str:
    """A page around ``body_html`` (whose ``#status`` says where its refresh comes from):
    the token bar, the buttons' and the refresh's script. ``buttons``: a token is configured
    (else the bar says how to get one)."""
    if buttons:
        bar = ('<label>API token <input id="token" type="password" autocomplete="off" size="22" '
               'placeholder="[web] token"></label>')
    else:
        bar = ('<span class="muted" id="token-off">Buttons are off: set <code>[web] token</code> '
               '(or <code>token_file</code>) in the configuration.</span>'
               '<input id="token" type="hidden">')
    if back:
        bar = '<a href="/" id="back">← status</a>' + bar
    # replaced last: the body holds the records' data, which may contain "%…%" itself
    return (PAGE.replace("%TITLE%", _e(title)).replace("%BAR%", bar)
            .replace("%BODY%", body_html))


def page(doc: Mapping[str, Any], *, buttons: bool) -> str:
    """The whole status page."""
    return _shell("accord — status", body(doc), buttons=buttons)


# --- a first run's whole preview (BB-3) --------------------------------------------------------
def preview_body(name: str, doc: Mapping[str, Any]) -> str:
    """The gates of one integration with the first run's preview uncut (``GET
    /integrations/{name}/preview``; its ``?partial=1`` is this)."""
    now = _parse(doc.get("generated_at")) or datetime.now(timezone.utc)
    d = doc["integrations"][name]
    integ = _Integration(name, d, now)
    gates = integ.gates(limit=None) or (
        f'<p class="none">{_e(name)} has no first run waiting for approval.</p>')
    return (f'<div id="status" data-partial="{_e(preview_url(name))}?partial=1">'
            f'<section class="integration" data-name="{_e(name)}"><div class="head"><h2>'
            f'{_e(name)}: the first run\'s preview</h2></div>{gates}</section></div>')


def preview_page(name: str, doc: Mapping[str, Any], *, buttons: bool) -> str:
    return _shell(f"accord — {name}: the first run's preview", preview_body(name, doc),
                  buttons=buttons, back=True)


# --- the correspondence table of a flow (BB-6, BB-7) -------------------------------------------
def links_body(t: Mapping[str, Any], systems: Mapping[str, str], url: str) -> str:
    """One keyset page of a flow's linked pairs (daemon/links.py ``page``) with their
    "No sync" / "Not this time" / "Lift" buttons; ``url``: this page's own address."""
    name, flow = t["integration"], t["flow"]
    integ = _Integration(name, {"systems": {s: {"name": n} for s, n in systems.items()}},
                         datetime.now(timezone.utc))
    rows = []
    for p in t["pairs"]:
        mode = "never" if p["no_sync"] else "skip_once" if p["not_this_time"] else None
        keys = " / ".join(f"{_e(a)} = {_e(b)}" for a, b in p["keys"])
        rows.append(
            f'<tr class="pair" data-link="{_e(p["link"])}" data-left="{_e(p["left"])}" '
            f'data-right="{_e(p["right"])}" data-mode="{_e(mode or "")}">'
            f'<td><b class="name">{_e(p["left_name"])}</b> <span class="id muted">id '
            f'{_e(p["left"])}</span></td>'
            f'<td><b class="name">{_e(p["right_name"])}</b> <span class="id muted">id '
            f'{_e(p["right"])}</span></td><td class="keys">{keys}</td>'
            f'<td class="buttons">{integ._mode_buttons(flow, "left", p["left"], mode)}</td>'
            f'</tr>')
    key_head = " / ".join(f"{a} = {b}" for a, b in t["keys"]) or "keys"
    last = t["first"] + len(rows) - 1
    where = (f'pairs {t["first"]:,}–{last:,} of {t["total"]:,}' if rows
             else f'{t["total"]:,} linked pair{"s" if t["total"] != 1 else ""}')
    nav = []
    if t["first"] > 1:
        nav.append(f'<a class="first" href="{_e(links_url(name, flow))}">« first</a>')
    if t.get("before"):
        nav.append(f'<a class="prev" href="{_e(links_url(name, flow, before=t["before"]))}">'
                   f'‹ previous</a>')
    if t.get("after"):
        nav.append(f'<a class="next" href="{_e(links_url(name, flow, after=t["after"]))}">'
                   f'next ›</a>')
    loose = ""
    if t.get("excluded_unlinked"):
        items = "".join(
            f'<tr class="unlinked" data-side="{_e(x["side"])}" data-record="{_e(x["record_id"])}">'
            f'<td>{integ.system(x["side"])} id {_e(x["record_id"])}</td>'
            f'<td class="msg">{_e(x["reason"])}</td><td class="buttons">'
            f'{integ._mode_buttons(flow, x["side"], x["record_id"], x["mode"])}</td></tr>'
            for x in t["excluded_unlinked"])
        loose = (f'<h3>Left out before they were linked ({len(t["excluded_unlinked"])})</h3>'
                 f'<table class="unlinked">{items}</table>')
    return (f'<div id="status" data-partial="{_e(url)}">'
            f'<section class="integration" data-name="{_e(name)}" data-flow="{_e(flow)}">'
            f'<div class="head"><h2>{_e(name)} · {_e(flow)}: linked pairs</h2></div>'
            f'<p class="muted">The correspondence table. <i>No sync</i>: the pair is never '
            f'synchronised until lifted; <i>Not this time</i>: it is left out of the next run '
            f'only. Either holds both records of the pair.</p>'
            f'<p class="pager"><span class="where">{where}</span> {" · ".join(nav)}</p>'
            + _table([systems["left"], systems["right"], key_head, ""], rows, "pairs")
            + loose + "</section></div>")


def links_page(t: Mapping[str, Any], systems: Mapping[str, str], url: str, *,
               buttons: bool) -> str:
    return _shell(f"accord — {t['integration']} · {t['flow']}: linked pairs",
                  links_body(t, systems, url), buttons=buttons, back=True)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em auto;max-width:1180px;padding:0 1em;
color:#1d232b;background:#f6f7f9}
h1{font-size:20px;margin:0 0 .3em}h2{font-size:17px;margin:0}h3{font-size:14px;
margin:1.1em 0 .3em}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1em 1.2em;
margin:1em 0}
.head{display:flex;justify-content:space-between;align-items:center;gap:1em}
.systems{margin:.2em 0 .4em;font-size:15px}.when{margin:.3em 0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .5em;
border-bottom:1px solid #eceff2;vertical-align:top}th{font-weight:600;color:#555}
.muted{color:#777}.none{margin:.2em 0}.b{display:inline-block;padding:0 .5em;border-radius:9px;
font-size:12px;background:#e6e8eb;font-weight:normal}.b.ok{background:#d8f3dc;color:#1b5e20}
.b.errors,.b.skipped,.b.paused,.b.retry{background:#fff3cd;color:#7a5a00}
.b.failed,.b.stopped,.b.crashed{background:#fde2e1;color:#9b1c1c}
.b.running{background:#dbeafe;color:#1e40af}.b.off,.b.waiting{background:#eee;color:#666}
.c{display:inline-block;margin-right:.7em;white-space:nowrap}.c.warn b{color:#9b1c1c}
.notice{border-radius:5px;padding:.5em .8em;margin:.5em 0}
.failure{background:#fde2e1;color:#6b1111}.paused{background:#fff3cd;color:#5c4400}
ul.flows{margin:.2em 0;padding-left:1.2em}ul.flows li{margin:.15em 0}
details.run{border-bottom:1px solid #eceff2;padding:.25em 0}
details.run summary{cursor:pointer}details.run[open]{padding-bottom:.6em}
details.run table{margin:.4em 0 0 1.2em;width:calc(100% - 1.2em)}.rid{font-weight:600}
.trigger{color:#555}.run-msg,.sub{margin:.3em 0 0 1.2em}.run-errors{margin:.2em 0}
.id{font-size:12px}.key{color:#555}.sys{font-weight:600}
button{font:inherit;padding:.15em .7em;margin-left:.4em;border:1px solid #99a;border-radius:4px;
background:#fff;cursor:pointer}button:hover{background:#eef2f7}
button[disabled]{opacity:.5;cursor:wait}td.buttons{white-space:nowrap}h3 button{font-size:12px}
#bar{display:flex;gap:.8em;align-items:center;flex-wrap:wrap}
#msg{color:#1e40af}#msg.bad{color:#9b1c1c}
h4{font-size:13px;margin:.9em 0 .2em}.preview .f{white-space:nowrap}.k{color:#777}
.data{font-size:12px;margin-top:.15em}.pager{margin:.4em 0}.pager a{margin-left:.6em}
a.links{font-size:12px;margin-left:.4em}#back{margin-right:.6em}
</style></head><body>
<h1>%TITLE%</h1>
<div id="bar">%BAR%<span id="msg" role="status"></span></div>
%BODY%
<script>
(function(){
  var timer = null, opened = {};
  var tok = document.getElementById('token'), msg = document.getElementById('msg');
  tok.value = sessionStorage.getItem('accord-token') || '';
  tok.addEventListener('change', function(){ sessionStorage.setItem('accord-token', tok.value); });
  function say(text, bad){ msg.textContent = text; msg.className = bad ? 'bad' : ''; }
  function localTimes(){
    document.querySelectorAll('time[datetime]').forEach(function(t){
      var d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) t.title = d.toLocaleString() + ' (' + t.title.replace(/ \\(.*\\)$/, '') + ')';
    });
  }
  function keepOpen(){
    document.querySelectorAll('details.run').forEach(function(d){
      var id = d.getAttribute('data-run');
      if (id in opened) d.open = opened[id];
    });
  }
  // what a person opened or closed (not what the server rendered open) survives a refresh
  document.addEventListener('click', function(ev){
    var sum = ev.target.closest('details.run > summary');
    if (sum) opened[sum.parentNode.getAttribute('data-run')] = !sum.parentNode.open;
  });
  function schedule(){
    var el = document.getElementById('status');
    var running = el && el.getAttribute('data-running') === '1';
    clearTimeout(timer);
    timer = setTimeout(refresh, running ? 2000 : 30000);
  }
  function refresh(){
    clearTimeout(timer);
    var el = document.getElementById('status');
    var url = (el && el.getAttribute('data-partial')) || '/partial';
    return fetch(url, {cache: 'no-store'}).then(function(r){
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text();
    }).then(function(text){
      document.getElementById('status').outerHTML = text;
      keepOpen(); localTimes();
    }).catch(function(e){ say('refresh failed: ' + e.message, true); }).then(schedule);
  }
  document.addEventListener('click', function(ev){
    var b = ev.target.closest('button.act');
    if (!b) return;
    var body = b.getAttribute('data-body');
    b.disabled = true;
    fetch(b.getAttribute('data-url'), {method: 'POST', body: body || '{}',
      headers: {'Authorization': 'Bearer ' + tok.value, 'Content-Type': 'application/json'}
    }).then(function(r){
      return r.json().then(function(j){
        var text = (j.message || j.error || j.status || ('HTTP ' + r.status));
        say(text, !r.ok);
        if ((r.status === 401 || r.status === 403) && tok.type !== 'hidden') tok.focus();
      });
    }).catch(function(e){ say(e.message, true); }).then(refresh);
  });
  localTimes(); schedule();
})();
</script></body></html>
"""
