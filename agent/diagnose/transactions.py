"""Long-running transactions (pure): the ``[thresholds] long_transaction`` finding.

Sessions idle in transaction have their own finding; this one names holders whose sessions keep
a transaction open while they work (a batch job, a slow report, a stuck statement), which holds
locks and holds back vacuum. Read from the groups' oldest ``xact_start``, so no extra query.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import spec
from ..aggregate.attribution import Attribution
from ..config import Thresholds
from ..contract import AGENT_APPLICATION_NAME
from ..spec import IDLE_IN_TRANSACTION
from .findings import Finding, Severity, age

SHOWN = 10
"""Holders named in the evidence, oldest transaction first."""


def long_transactions(a: Attribution, t: Thresholds) -> Iterator[Finding]:
    old = sorted(((g.max_xact_age, g) for g in a.groups
                  if g.max_xact_age is not None and g.max_xact_age >= t[spec.LONG_TRANSACTION]
                  and a.value(g.key, "state") not in IDLE_IN_TRANSACTION
                  and a.value(g.key, "application_name") != AGENT_APPLICATION_NAME),
                 key=lambda ag: -ag[0])
    if not old:
        return
    holders = [{d: a.value(g.key, d) for d in a.dimensions} | {"oldest_seconds": xact_age}
               for xact_age, g in old]
    yield Finding(
        "long_transaction", Severity.WARNING,
        f"Transactions open for over {age(t[spec.LONG_TRANSACTION])} (longest {age(old[0][0])})",
        tuple(", ".join(f"{d} {v}" for d, v in h.items() if d != "oldest_seconds" and v)
              + f": transaction open {age(xact_age)}"
              for h, (xact_age, _) in zip(holders[:SHOWN], old, strict=False)),
        "A long transaction holds its locks and holds back vacuum for its whole life. Find "
        "what it runs (pg_stat_activity.query of the holder); split batch work into shorter "
        "transactions; set statement_timeout or transaction_timeout (PostgreSQL 17) for "
        "roles that should never run long.",
        {"holders": holders, "longest_seconds": old[0][0]})
