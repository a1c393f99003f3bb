"""Go-template fragments for the annotations (Prometheus alert templating).

PromQL inside ``printf`` uses single-quoted strings, so the Go strings need no escaping and the
Helm variant no backticks. Lookups match the alert's own target and grouping labels.
"""

from __future__ import annotations

from .. import spec

ON_POSTGRES = "PostgreSQL {{ $labels.target }}: "
"""The start of a PostgreSQL target's summary."""
ON_PGBOUNCER = "PgBouncer {{ $labels.target }}: "
IN_IIT = f"state=~'{spec.IDLE_IN_TRANSACTION_REGEX}'"
IDLE = f"state='{spec.State.IDLE}'"


def query(fmt: str, *args: str) -> str:
    """An instant query built by ``printf``; ``target=%q`` also matches the grouping labels."""
    fmt = fmt.replace("target=%q", "target=%q<GF>")
    args = tuple(a + "<GA>" if a == "$labels.target" else a for a in args)
    return f'printf "{fmt}" {" ".join(args)} | query'


def scalar(fmt: str, *args: str, fn: str = "humanize", default: str = "0") -> str:
    """The first value of an instant query, humanized, or ``default`` if it returns nothing."""
    return ("{{ with " + query(fmt, *args) + " }}{{ . | first | value | " + fn + " }}"
            "{{ else }}" + default + "{{ end }}")


def listing(fmt: str, args: tuple[str, ...], item: str, sort_label: str,
            empty: str = "") -> str:
    """`` item, item`` over an instant query's samples (``$s``), sorted by one label."""
    return ("{{ range $i, $s := " + query(fmt, *args) + f' | sortByLabel "{sort_label}" }}}}'
            "{{ if $i }},{{ end }} " + item + ("{{ else }}" + empty if empty else "")
            + "{{ end }}")


def first(instant_query: str, item: str) -> str:
    """``item`` about the first sample of a query (``.Labels``, ``.Value``); nothing if none."""
    return "{{ with " + instant_query + " }}{{ with first . }}" + item + "{{ end }}{{ end }}"


def largest_client(series: str, *args: str) -> str:
    """The application and host holding most of ``series`` (a printf format and its args)."""
    return first(query(f"topk(1, sum by (application_name, client_addr) ({series}))", *args),
                 " application_name {{ .Labels.application_name }} from "
                 "{{ .Labels.client_addr }} with {{ .Value | humanize }}")
