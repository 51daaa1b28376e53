"""What every end-to-end environment shares: sandboxes on loopback (or database files), a
config file naming them with a real SQLite state file, and the ``App`` built from it; a run is
one ``runner.run`` over real HTTP. Each preset's environment (``conftest.Env``, ``aj_env``,
``bb_env``, ``dt_env``, ``sg_env``) adds its config text and its users' side."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from daemon.app import App
from daemon.config import load
from daemon.engine.runner import RunOptions, RunResult, run
from daemon.store.tables import T


class AppEnv:
    integ = ""                  # the integration the config names
    trigger = "test"            # what a run says started it

    def __init__(self, tmp: Path, *boxes: Any) -> None:
        self.tmp, self.boxes = tmp, boxes
        self.app: App | None = None
        self.cfg_path = ""

    def config_text(self, **kw: Any) -> str:
        raise NotImplementedError

    def write_config(self, name: str = "config.toml", **kw: Any) -> str:
        path = self.tmp / name
        path.write_text(self.config_text(**kw))
        return str(path)

    async def build(self, name: str = "config.toml", **kw: Any) -> App:
        """(Re)build the App from a config written now; the state file stays."""
        if self.app is not None:
            await self.app.close()
        self.cfg_path = self.write_config(name, **kw)
        self.app = await App(load(self.cfg_path)).start(sandboxes=False, activity=False)
        return self.app

    @property
    def integration(self):
        assert self.app is not None, "build the App first"
        return self.app.integration(self.integ)

    async def run(self, progress=None, **kw: Any) -> RunResult:
        kw.setdefault("trigger", self.trigger)
        return await run(self.app.db, self.integration, RunOptions(**kw), progress)

    async def rows(self, table: str) -> list[dict]:
        async with self.app.db.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(T[table]))).mappings()]

    async def links(self, flow: str) -> dict[str, str]:
        """left id -> right id of the flow's links."""
        return {r["left_id"]: r["right_id"] for r in await self.rows("links")
                if r["flow"] == flow and r["integration"] == self.integ}

    async def errors(self, flow: str | None = None) -> list[dict]:
        return [r for r in await self.rows("record_errors")
                if flow is None or r["flow"] == flow]

    def reset_hits(self) -> None:
        for box in self.boxes:
            box.reset_hits()

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
        for box in self.boxes:
            await box.stop()


def step(result: RunResult, flow: str):
    return next(s for s in result.steps if s.flow == flow)


def counts(result: RunResult, flow: str) -> dict:
    return dict(step(result, flow).counts)


def ok(result: RunResult) -> None:
    assert result.status == "ok", (result.status, result.message,
                                   [(s.flow, s.status, s.message, dict(s.counts))
                                    for s in result.steps])
