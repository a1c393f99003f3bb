"""The application-host unit: the hardened unit plus exactly what naming client processes needs,
and those two capabilities checked for real (with setpriv) against this machine's /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from systemd_support import UNIT, systemd_analyze, unit_settings, verifiable

from agent.collect import processes

APPHOST = UNIT.with_name("pgconn-agent-apphost.service")
CAPS = "CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"
ROOT = Path(__file__).resolve().parent.parent


def test_the_variant_differs_from_the_hardened_unit_only_where_it_must() -> None:
    hardened, variant = (unit_settings(p.read_text(encoding="utf-8")) for p in (UNIT, APPHOST))
    changed = {k for k in hardened.keys() | variant.keys() if hardened.get(k) != variant.get(k)}
    assert changed == {"ProtectProc", "ProcSubset", "CapabilityBoundingSet",
                       "AmbientCapabilities", "PrivateUsers", "RestrictAddressFamilies"}
    assert variant["RestrictAddressFamilies"] == [
        hardened["RestrictAddressFamilies"][0] + " AF_NETLINK"]
    assert variant["CapabilityBoundingSet"] == variant["AmbientCapabilities"] == [CAPS]
    assert (variant["ProtectProc"], variant["ProcSubset"], variant["PrivateUsers"]) == (
        ["default"], ["all"], ["no"])
    # The hardened unit hides /proc/net and other processes: attribution is off there.
    assert (hardened["ProcSubset"], hardened["ProtectProc"]) == (["pid"], ["invisible"])


def test_verify_prints_nothing(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(verifiable(APPHOST, tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def _owners_as_nobody(port: int, caps: list[str]) -> str:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from agent.collect.processes import read_host; "
            f"h = read_host([('127.0.0.1', {port}, 0)]); print(sorted(h.owners.values()))")
    wanted = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in caps)
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            *([f"--inh-caps={wanted}", f"--ambient-caps={wanted}"] if caps else []),
            sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_both_capabilities_and_only_they_let_another_user_name_the_owner() -> None:
    assert os.geteuid() == 0, "the capability check runs as root (CI does)"
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        port = client.getsockname()[1]
        assert processes.read_host([("127.0.0.1", port, 0)]).owners  # root sees it
        caps = CAPS.split()
        assert _owners_as_nobody(port, caps) == f"[{os.getpid()}]"
        for alone in ([], caps[:1], caps[1:]):
            assert _owners_as_nobody(port, alone) == "[]", alone
