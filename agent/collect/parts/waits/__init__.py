"""Active client sessions that wait, by wait event (capped and counted in aggregate)."""

from __future__ import annotations

from dataclasses import dataclass

from ...part import Part


@dataclass(frozen=True, slots=True)
class WaitCount:
    """Active client sessions waiting on one wait event."""

    datname: str | None
    usename: str | None
    application_name: str
    wait_event_type: str
    wait_event: str
    count: int


PART = Part("waits", WaitCount)
