"""The container image, built from the Dockerfile with Debian's buildah and run for real.

scripts/build-image.sh builds it on a base made from Debian packages (cached between runs);
the agent then runs inside it, as the image's own user, against a real PostgreSQL on the host
network. The build time and the image's size are printed in the run's "measurements".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_e2e import SHOP_APP, SHOP_DB, SHOP_USER, Agent, Situation, wait_until

import agent
from agent import contract as c
from agent.demo.server import free_port

pytestmark = pytest.mark.timeout(900)  # a cold build makes its base image first (~1.5 min)

ROOT = Path(__file__).resolve().parent.parent
BUILDAH = ("buildah", "--storage-driver", "vfs")
DEBIAN_BASE = "localhost/debian-python:bookworm"
CONFIG_PATH = "/etc/pgconn-agent/config.toml"
IMAGE_UID = 10001


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def run_argv(container: str, *mounts: str, env: dict[str, str] | None = None) -> list[str]:
    """``buildah run`` on the host network (chroot isolation: no daemon, no namespaces
    needed); its user is the image's USER."""
    options = [f"--volume={m}" for m in mounts]
    options += [f"--env={k}={v}" for k, v in (env or {}).items()]
    return [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", *options, container,
            "--"]


@pytest.fixture(scope="module")
def image(measure: Callable[[str], None]) -> str:
    """scripts/build-image.sh with its default tag; how long it took and what it reused."""
    if buildah("inspect", "--type", "image", DEBIAN_BASE).returncode == 0:
        reused = "base image cached"
    elif list(Path(os.environ.get("PGCONN_CACHE_DIR") or "/var/cache/pgconn-agent")
              .glob("debian-python-*.tar")):
        reused = "base image imported from the cached rootfs tarball"
    else:
        reused = "cold: base image made by mmdebstrap"
    start = time.monotonic()
    built = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh")], cwd=ROOT,
                           capture_output=True, text=True, timeout=850, check=False)
    seconds = time.monotonic() - start
    assert built.returncode == 0, built.stderr[-4000:]
    tag = built.stdout.strip().splitlines()[-1]
    sizes = {name: buildah("images", "--format", "{{.Size}}", name).stdout.strip()
             for name in (tag, DEBIAN_BASE)}
    measure(f"container image {tag}: {sizes[tag]} (its Debian base {sizes[DEBIAN_BASE]}); "
            f"scripts/build-image.sh took {seconds:.0f} s ({reused})")
    return tag


@pytest.fixture(scope="module")
def inspected(image: str) -> dict[str, Any]:
    result = buildah("inspect", "--type", "image", image)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    name = f"pgconn-agent-test-{os.getpid()}"
    made = buildah("from", "--name", name, image)
    assert made.returncode == 0, made.stderr
    yield name
    buildah("rm", name)


def run_in(container: str, *argv: str, mounts: tuple[str, ...] = (),
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*run_argv(container, *mounts, env=env), *argv], capture_output=True,
                          text=True, timeout=120, check=False)


@contextlib.contextmanager
def agent_in_image(container: str, args: list[str], *mounts: str
                   ) -> Iterator[tuple[Agent, int]]:
    """``pgconn-agent run ARGS`` inside the image, started; yields it and the agent's pid.

    On exit the agent gets SIGTERM itself: signalling ``buildah run`` would SIGKILL it, and
    killing ``buildah run`` would leave it running.
    """
    with Agent(args, command=[*run_argv(container, *mounts), "pgconn-agent"]) as proc:
        inside: int | None = None
        try:
            inside = agent_process(proc.proc.pid)
            proc.started(timeout=60)
            yield proc, inside
        finally:
            if inside is not None and proc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(inside, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.proc.wait(20)


def config_file(tmp_path: Path, dsn: str, listen: str | None) -> Path:
    path = tmp_path / "config.toml"
    agent_table = f'[agent]\nlisten = "{listen}"\ninterval = 2\n' if listen else ""
    path.write_text(f"{agent_table}[[targets]]\nname = \"shop\"\ndsn = {json.dumps(dsn)}\n")
    path.chmod(0o644)
    return path


def test_diagnose_inside_the_image_names_the_holder(container: str, held: Situation) -> None:
    result = run_in(container, "pgconn-agent", "diagnose", "--dsn", held.server.dsn(),
                    "--format", "json")
    assert result.returncode in (1, 3), result.stderr
    (report,) = json.loads(result.stdout)["targets"]
    holder = report["holders"][0]
    assert (holder["application_name"], holder["usename"], holder["datname"]) == \
        (SHOP_APP, SHOP_USER, SHOP_DB)
    assert holder["states"] == held.shop_states
    assert report["lock_chains"][0]["root_pid"] == held.holder_pid


def test_run_inside_the_image_serves_the_contract_as_a_non_root_user(
        container: str, held: Situation, tmp_path: Path) -> None:
    """A mounted config file's listen wins over the image's default 0.0.0.0:9188."""
    listen = f"127.0.0.1:{free_port()}"
    mount = f"{config_file(tmp_path, held.server.dsn(), listen)}:{CONFIG_PATH}:ro"
    with agent_in_image(container, ["--config", CONFIG_PATH], mount) as (proc, inside):
        assert proc.listen == listen
        assert proc.get("/healthz")[0] == 200
        wait_until(lambda: proc.value("pgconn_agent_up", target="shop") == 1, 30, "up 1")
        served = {name for name, _, _ in proc.samples()}
        declared = {spec.prometheus_name + suffix for spec in c.METRICS
                    for suffix in ("", "_bucket", "_sum", "_count")}
        assert served <= declared, served - declared
        assert {c.AGENT_UP.prometheus_name, c.CONNECTION_COUNT.prometheus_name} <= served
        assert proc.value(c.CONNECTION_COUNT.prometheus_name, application_name=SHOP_APP,
                          state="idle") == held.shop_states["idle"]
        assert ids(inside) == (IMAGE_UID, IMAGE_UID), "the agent runs as the image's USER"
        assert os.readlink(f"/proc/{inside}/root") != "/", "the agent runs inside the image"
        os.kill(inside, signal.SIGTERM)  # what a container runtime does on stop
        assert proc.proc.wait(20) == 0, proc.stderr()
        assert "Traceback" not in proc.stderr()


def test_the_images_default_listen_is_all_interfaces(container: str, tmp_path: Path) -> None:
    mount = f"{config_file(tmp_path, 'host=db', None)}:{CONFIG_PATH}:ro"
    result = run_in(container, "pgconn-agent", "check-config", CONFIG_PATH, mounts=(mount,))
    assert result.returncode == 0, result.stderr
    assert "listen 0.0.0.0:9188" in result.stdout


def test_healthcheck_kept_and_working_inside_the_image(
        container: str, inspected: dict[str, Any], held: Situation) -> None:
    check = inspected["Docker"]["config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD", check
    listen = f"127.0.0.1:{free_port()}"
    with agent_in_image(container, ["--dsn", held.server.dsn(), "--listen", listen]):
        probe = run_in(container, *check[1:], env={"PGCONN_AGENT_LISTEN": listen})
        assert probe.returncode == 0, probe.stderr
    probe = run_in(container, *check[1:], env={"PGCONN_AGENT_LISTEN": listen})
    assert probe.returncode != 0, "the health check passes with no agent running"


def test_no_pip_in_the_image(container: str) -> None:
    result = run_in(container, "python", "-c",
                    "import importlib.util, shutil; print(importlib.util.find_spec('pip'), "
                    "shutil.which('pip'), shutil.which('pip3'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None", "None"]


def test_the_image_runs_this_version(container: str) -> None:
    result = run_in(container, "pgconn-agent", "--version")
    assert result.stdout.strip() == f"pgconn-agent, version {agent.__version__}", result.stderr


def test_oci_labels_and_user(inspected: dict[str, Any]) -> None:
    config = inspected["Docker"]["config"]
    labels = config["Labels"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert labels["org.opencontainers.image.version"] == agent.__version__
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"


def test_the_charts_default_image_is_the_one_the_documented_command_builds(image: str) -> None:
    chart = yaml.safe_load((ROOT / "helm/pgconn-agent/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "helm/pgconn-agent/values.yaml").read_text())["image"]
    default = f"{values['repository']}:{values['tag'] or chart['appVersion']}"
    assert chart["appVersion"] == agent.__version__
    assert image == default
    readme = (ROOT / "README.md").read_text()
    assert "scripts/build-image.sh" in readme
    assert f"-t {default} " in readme


def agent_process(launcher: int) -> int:
    """The agent's own process: the descendant of ``buildah run`` running pgconn-agent."""
    def find() -> int | None:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                except OSError:
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        todo = list(children.get(launcher, []))
        while todo:
            pid = todo.pop()
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"/pgconn-agent") for a in argv) and b"buildah" not in argv[0]:
                return pid
            todo += children.get(pid, [])
        return None

    return wait_until(find, 10, "the agent process under buildah run")


def ids(pid: int) -> tuple[int, int]:
    """(effective uid, effective gid) of a process."""
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["Uid"].split()[1]), int(status["Gid"].split()[1])
