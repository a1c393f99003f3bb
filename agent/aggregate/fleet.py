"""Split one server's points among the targets that reach it (pure).

Every target of a server would otherwise repeat the whole server's view, so series grow with
targets x databases. Here each point goes to exactly one target: a point naming a database
(``contract.DATABASE_ATTRIBUTE``) to the target of that database, every other point (and points
of databases no target names) to the server's owner, the first target by name. A second group
of targets that turned out to reach the same server (``server_wide=False``) keeps only its own
databases' points, and the owner leaves those databases (``elsewhere``) to it, so nothing is
exported twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import contract as c
from .points import Attributes, PointSet


def split(point_set: PointSet, databases: Mapping[str, str], *, server_wide: bool = True,
          elsewhere: frozenset[str] = frozenset()) -> dict[str, PointSet]:
    """Each target's share of one server's points; ``databases`` maps target -> its database.

    Two targets naming the same database: the first by name takes that database's points.
    """
    names = sorted(databases)
    owner = names[0] if server_wide else None
    holder: dict[str, str] = {}
    for name in names:
        holder.setdefault(databases[name], name)
    shares = {name: PointSet({metric: [] for metric in point_set.points}, [])
              for name in names}

    def place(attrs: Attributes) -> tuple[str, Attributes] | None:
        datname = next((v for k, v in attrs if k == c.DATABASE_ATTRIBUTE), None)
        if datname is None:
            name = owner
        else:
            name = holder.get(datname, None if datname in elsewhere else owner)
        if name is None:
            return None
        return name, (("target", name), *attrs[1:])

    for metric, pts in point_set.points.items():
        for attrs, value in pts:
            placed = place(attrs)
            if placed is not None:
                shares[placed[0]].points[metric].append((placed[1], value))
    for attrs, value in point_set.opened:
        placed = place(attrs)
        if placed is not None:
            shares[placed[0]].opened.append((placed[1], value))
    return shares
