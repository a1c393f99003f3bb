"""The daemon's ``GET /diagnose`` and ``diagnose --agent URL``, which prints it.

The daemon already holds a connection and a history, so it can answer when the server has no
slot left for a new diagnosing client. The exit status travels in a header, so the text form
keeps the exit codes of a local ``diagnose``.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request

from ..errors import AgentError
from . import render
from .render import Report
from .run import exit_code

EXIT_HEADER = "X-Pgconn-Agent-Exit"
TIMEOUT_S = 5.0


def respond(reports: list[Report], query: str) -> tuple[int, bytes, str, int]:
    """(HTTP status, body, content type, diagnose exit status) for ``/diagnose?<query>``."""
    fmt = urllib.parse.parse_qs(query).get("format", ["text"])[-1]
    code = exit_code(reports)
    if fmt == "json":
        return 200, render.as_json(reports).encode(), "application/json", code
    if fmt != "text":
        return 400, f"format: expected text or json, found {fmt!r}\n".encode(), \
            "text/plain; charset=utf-8", 2
    body = "\n".join(render.text(r) for r in reports)
    return 200, body.encode(), "text/plain; charset=utf-8", code


def fetch(url: str, fmt: str) -> tuple[str, int]:
    """The agent's diagnosis and its exit status; AgentError if the agent does not answer."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    # Credentials in the URL (user:password@host) go as basic auth, never into messages.
    netloc = parts.netloc.rpartition("@")[2]
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    request = urllib.request.Request(
        base + "/diagnose?" + urllib.parse.urlencode({"format": fmt}))
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:" \
                f"{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            body = resp.read().decode()
            header = resp.headers.get(EXIT_HEADER, "3")
    except urllib.error.HTTPError as exc:
        raise AgentError(f"agent {base}: HTTP {exc.code}: "
                         f"{exc.read().decode(errors='replace').strip()[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AgentError(f"agent {base}: cannot reach it: {reason}") from None
    return body, int(header) if header.isdigit() else 3
