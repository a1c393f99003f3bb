"""``pgconn-agent healthcheck``: is the agent's own listener answering? (container liveness)

Whatever the web config turned on, a liveness probe from inside the container must work: so it
tries plain HTTP, then TLS (not verified: the peer is this host's own listener), and counts a
``401`` as alive, because basic authentication guards every path, ``/healthz`` included.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request

UNSPECIFIED = ("", "0.0.0.0", "::", "[::]")


def healthz_urls(listen: str) -> list[str]:
    """``/healthz`` over HTTP and HTTPS at ``listen``; a wildcard host means loopback."""
    host, _, port = listen.rpartition(":")
    if host in UNSPECIFIED:
        host = "127.0.0.1"
    return [f"{scheme}://{host}:{port}/healthz" for scheme in ("http", "https")]


def probe(listen: str, timeout: float = 4.0) -> tuple[bool, str]:
    """(alive, why): alive when ``/healthz`` answers 200, or 401 behind basic auth."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    why = "no answer"
    for url in healthz_urls(listen):
        context = unverified if url.startswith("https") else None
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                return response.status == 200, f"{url}: HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return exc.code == 401, f"{url}: HTTP {exc.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            why = f"{url}: {getattr(exc, 'reason', None) or exc}"
    return False, why
