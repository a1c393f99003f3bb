"""Client backends grouped by holder and state, aggregated and capped on the server; ``opened``
counts the backends the previous poll of the same connection did not see."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...part import Part, Rows

CHURN_WINDOW_S = 60.0
"""A backend younger than this is ``young``: the window of the churn findings."""


@dataclass(frozen=True, slots=True)
class ActivityGroup:
    """Client backends sharing (datname, usename, application_name, client_addr, state).

    Aggregated in SQL so a poll costs the same at 3,000 sessions as at 30.
    ``opened`` counts backends the previous poll did not see (0 on a connection's first poll);
    ``young`` counts backends younger than the churn window; ``folded`` (on the server's overflow
    row) how many groups the cardinality cap folded into it. Names of dimensions configured out
    are None.
    """

    datname: str | None
    usename: str | None
    application_name: str
    client_addr: str
    state: str
    count: int
    max_state_age: float | None
    max_xact_age: float | None
    opened: int
    young: int
    folded: int = 0


class Opened:
    """One connection's reader: groups with ``opened``, the recent backends (``recent_pids``)
    that the previous poll did not list."""

    def __init__(self) -> None:
        self._seen: frozenset[int] | None = None

    def __call__(self, rows: Rows) -> tuple[ActivityGroup, ...]:
        seen, recent = self._seen, set[int]()
        groups = []
        for row in rows:
            pids = row.pop("recent_pids")
            recent.update(pids)
            opened = 0 if seen is None else sum(1 for pid in pids if pid not in seen)
            groups.append(ActivityGroup(**row, opened=opened))
        self._seen = frozenset(recent)
        return tuple(groups)

    @property
    def seen(self) -> frozenset[int]:
        """The recent backends the previous poll listed."""
        return self._seen or frozenset()

    def saw(self, pids: Iterable[int]) -> None:
        """Backends seen since the previous poll (a catch burst): the next poll does not count
        them as opened again."""
        self._seen = self.seen.union(pids)


def _params(server_version_num: int) -> Mapping[str, Any]:
    return {"churn_window": CHURN_WINDOW_S}


PART = Part("activity_groups", ActivityGroup, params=_params, reader=Opened)
