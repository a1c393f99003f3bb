"""Generate ``docs/metrics.md`` from the contract: ``python -m agent.docs > docs/metrics.md``."""

from __future__ import annotations

from . import contract as c


def metrics_markdown() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `agent/contract.py` by `python -m agent.docs`; do not edit by hand.",
        "These names, units and attributes are pgconn-agent's public interface: they are only",
        "ever added to, never renamed.",
        "",
        f"G (group attributes) = {', '.join(c.GROUP_DIMENSIONS)}; dimensions removed with",
        "`[agent] dimensions` drop out of every metric. `target` is the target's configured name.",
        f"Unset application_name is `{c.UNSET_APPLICATION}`, unix-socket clients are "
        f"`{c.LOCAL_CLIENT}`,",
        f"sessions the agent's role may not see have state and client_addr `{c.HIDDEN}`, and "
        "groups",
        f"folded by the cardinality cap carry `{c.OVERFLOW_VALUE}` in every group attribute.",
        "",
        "| OTel name | instrument | unit | attributes | Prometheus name | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in c.METRICS:
        attrs = ", ".join("G" if a == c.GROUP else a for a in m.attributes)
        lines.append(f"| `{m.name}` | {m.instrument.value} | `{m.unit or '(none)'}` | {attrs} | "
                     f"`{m.prometheus_name}` | {m.description} |")
    lines += ["", "`pgconn_agent.poll.duration` buckets (seconds): "
              + ", ".join(f"{b:g}" for b in c.POLL_DURATION_BUCKETS), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(metrics_markdown(), end="")
