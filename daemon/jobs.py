"""The scheduler's job ids, named the same by the service that schedules them and the web
side that shows and triggers them."""
from __future__ import annotations


def sync_job_id(integration: str) -> str:
    return f"sync:{integration}"


def extra_job_id(integration: str, job: str) -> str:
    return f"job:{integration}:{job}"


def followup_job_id(integration: str) -> str:
    return f"more:{integration}"
