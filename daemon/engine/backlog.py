"""A batch that knows its backlog (AJ-4): what a flow with ``batch_size`` says about the
records still waiting. Pure.

The flow's cursor keeps ``batch`` (how many were synchronised by the batches so far) while
batches go on; the run that finds nothing more waiting says "Sync Completed".
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Batch:
    size: int
    label: str                  # what is counted: "projects"
    taken: int                  # synchronised by this run
    waiting: int                # still waiting after it
    before: int = 0             # synchronised by the earlier batches of this catch-up

    @property
    def done(self) -> int:
        return self.before + self.taken

    @property
    def runs_left(self) -> int:
        return math.ceil(self.waiting / self.size) if self.waiting else 0

    def message(self, automatic: bool = True) -> str:
        if not self.waiting:
            return f"Sync Completed: {self.done:,} {self.label} synchronised"
        runs = self.runs_left
        return (f"{self.done:,} of {self.done + self.waiting:,} {self.label} synchronised. "
                f"The sync contained more than {self.size:,} {self.label}: re-run the manual "
                f"or auto sync {runs} more time{'s' if runs != 1 else ''} to sync the "
                f"remaining {self.waiting:,}"
                + (" (continuing automatically)" if automatic else ""))
