"""Targets from a directory of TOML files, so a fleet tool adds and removes targets without
rewriting the main config (Ansible, Terraform, a Kubernetes ConfigMap).

Every ``*.toml`` file holds ``[[targets]]`` only. A bad file (unreadable, invalid, a name another
file already uses) is rejected alone with one error line naming the file and the key; the other
files' targets keep running. ``Watch`` notices a change from the files' names, sizes and mtimes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from . import config as cfg
from .errors import ConfigError

log = logging.getLogger(__name__)
WATCH_EVERY_S = 2.0


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def read_targets(directory: Path, targets: tuple[cfg.Target, ...], interval: float
                 ) -> tuple[tuple[cfg.Target, ...], tuple[str, ...]]:
    """``targets`` followed by the good files' targets (files in name order), and one error
    line per rejected file."""
    if not directory.is_dir():
        return targets, (f"{directory}: targets_dir: not a directory",)
    rejected: list[str] = []
    out = list(targets)
    taken = {t.name for t in targets}
    for path in _files(directory):
        try:
            found = cfg.parse_target_file(path, interval)
            clash = next((i for i, t in enumerate(found) if t.name in taken), None)
            if clash is not None:
                raise ConfigError(f"{path}: targets[{clash}].name: duplicate target name "
                                  f"{found[clash].name!r} (another file or the config has it)")
        except ConfigError as exc:
            rejected.append(str(exc))
            continue
        out.extend(found)
        taken.update(t.name for t in found)
    return tuple(out), tuple(rejected)


def report(config: cfg.Config) -> None:
    """One error line per rejected target file (logged once logging is set up)."""
    for error in config.rejected:
        log.error("target file rejected", extra={"error": error})


class Watch:
    """Tells, at most every ``WATCH_EVERY_S``, whether a directory's target files changed since
    the configuration last read them."""

    def __init__(self, directory: Path | None) -> None:
        self._checked = time.monotonic()
        self.reset(directory)

    def reset(self, directory: Path | None) -> None:
        """The files as the configuration just read them."""
        self._directory = directory
        self._seen = _signature(directory) if directory is not None else ()

    def changed(self) -> bool:
        if self._directory is None or time.monotonic() - self._checked < WATCH_EVERY_S:
            return False
        self._checked = time.monotonic()
        return _signature(self._directory) != self._seen


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    try:
        for path in _files(directory):
            stat = path.stat()
            out.append((path.name, stat.st_mtime_ns, stat.st_size))
    except OSError:
        pass
    return tuple(out)
