"""The ``pgconn-agent`` command line: diagnose, run, demo, check-config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__
from . import config as cfg
from .errors import AgentError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_BAD_INPUT = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"pgconn-agent: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def target_options(func: F) -> F:
    """--dsn (repeatable) and --config, shared by diagnose and run."""
    func = click.option("--config", "config_path", type=click.Path(path_type=Path),
                        envvar="PGCONN_AGENT_CONFIG",
                        help="TOML configuration file (env PGCONN_AGENT_CONFIG).")(func)
    return click.option("--dsn", "dsns", multiple=True, metavar="DSN",
                        help="libpq connection string or URI; repeat for several targets. "
                             "Replaces the config file's targets.")(func)


def _overrides(dsns: tuple[str, ...], **flags: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if dsns:
        out["dsns"] = list(dsns)
    return out


def _load(config_path: Path | None, overrides: dict[str, Any]) -> cfg.Config:
    try:
        config = cfg.load(config_path, overrides)
    except AgentError as exc:
        _fail(str(exc))
    if not config.targets:
        _fail(f"{config.source}: targets: no target configured (give --dsn or [[targets]], "
              f"or set PGHOST)")
    return config


def _secret_notes(config: cfg.Config, *, strict: bool) -> list[str]:
    """Read the targets' passwords up front: a bad one is bad input (exit 2), not a crash."""
    try:
        notes = cfg.check_secrets(config)
    except AgentError as exc:
        _fail(str(exc))
    if notes and strict:
        _fail(f"{config.source}: {notes[0]}")
    return notes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgconn-agent")
def main() -> None:
    """Who holds your PostgreSQL connections: diagnose now, or export metrics continuously."""


@main.command()
@target_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--show-queries", is_flag=True,
              help="Also print the (truncated) query text of the sessions in the findings.")
@click.option("--window", type=click.FloatRange(min=0, max=600), default=5.0,
              show_default=True, metavar="SECONDS",
              help="Observe this long with fast polls (rates, persistence); 0: one snapshot.")
@click.option("--agent", "agent_url", metavar="URL",
              help="Ask a running agent (its --listen address) instead of connecting: it "
                   "answers from its history even when the server is full.")
def diagnose(dsns: tuple[str, ...], config_path: Path | None, fmt: str,
             show_queries: bool, window: float, agent_url: str | None) -> None:
    """Explain who holds the connection slots, with the evidence.

    Exit status: 0 healthy, 1 warning, 2 bad input, 3 critical (or a target unreachable).
    """
    if agent_url:
        from .diagnose.remote import fetch

        try:
            body, code = fetch(agent_url, fmt)
        except AgentError as exc:
            click.echo(f"pgconn-agent: {exc}", err=True)
            sys.exit(3)
        click.echo(body, nl=False)
        sys.exit(code)

    from .diagnose import render
    from .diagnose.run import diagnose_all, exit_code

    config = _load(config_path, _overrides(dsns, show_queries=show_queries or None))
    _secret_notes(config, strict=True)
    reports = diagnose_all(config, window=window)
    if fmt == "json":
        click.echo(render.as_json(reports), nl=False)
    else:
        click.echo("\n".join(render.text(r) for r in reports), nl=False)
    sys.exit(exit_code(reports))


@main.command()
@target_options
@click.option("--listen", metavar="HOST:PORT",
              help="Address of /metrics, /healthz and /readyz (default 127.0.0.1:9188; "
                   "env PGCONN_AGENT_LISTEN).")
@click.option("--interval", type=float, help="Seconds between polls of each target.")
@click.option("--log-format", type=click.Choice(["text", "json"]))
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--web.config.file", "web_config_file", metavar="FILE",
              help="Prometheus exporter-toolkit web config (TLS, basic auth) for the HTTP "
                   "endpoint (env PGCONN_AGENT_WEB_CONFIG_FILE).")
@click.option("--targets-dir", metavar="DIR", type=click.Path(resolve_path=True),
              help="Directory of TOML files holding [[targets]], re-read on SIGHUP and on "
                   "change (env PGCONN_AGENT_TARGETS_DIR).")
@click.option("--shard", metavar="I/N",
              help="Poll only shard I of N (by server); I may be a StatefulSet pod name "
                   "ending in -I (env PGCONN_AGENT_SHARD).")
def run(dsns: tuple[str, ...], config_path: Path | None, listen: str | None,
        interval: float | None, log_format: str | None, log_level: str | None,
        web_config_file: str | None, targets_dir: str | None, shard: str | None) -> None:
    """Poll every target on a schedule and export OpenTelemetry metrics (OTLP and /metrics)."""
    from . import logs
    from .daemon import Daemon

    overrides = _overrides(dsns, listen=listen, interval=interval, log_format=log_format,
                           log_level=log_level, web_config_file=web_config_file,
                           targets_dir=targets_dir, shard=shard)
    try:
        daemon = Daemon(config_path, overrides)
    except AgentError as exc:
        _fail(str(exc))
    logs.setup(daemon.config.log_format, daemon.config.log_level)
    daemon.install_signal_handlers()
    try:
        code = daemon.run()
    except OSError as exc:
        _fail(f"cannot serve on {daemon.config.listen}: {exc.strerror or exc}")
    except AgentError as exc:
        _fail(str(exc))
    daemon.exit(code)


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              envvar="PGCONN_AGENT_CONFIG", help="The agent's configuration file, for its "
              "listen address (env PGCONN_AGENT_CONFIG).")
@click.option("--listen", metavar="HOST:PORT", help="Probe this address instead.")
def healthcheck(config_path: Path | None, listen: str | None) -> None:
    """Exit 0 if the agent's listener answers /healthz (the container image's HEALTHCHECK).

    Plain HTTP or TLS, with or without basic authentication (a 401 means alive).
    """
    from .probe import probe

    address = listen or _load_listen(config_path)
    alive, why = probe(address)
    click.echo(f"{'ok' if alive else 'unhealthy'}: {why}", err=not alive)
    sys.exit(0 if alive else 1)


def _load_listen(config_path: Path | None) -> str:
    try:
        listen = cfg.load(config_path, {}).listen
    except AgentError as exc:
        _fail(str(exc))
    if not listen:
        _fail("listen: the HTTP endpoint is off: nothing to probe")
    return listen


@main.command("check-config")
@click.argument("config_path", type=click.Path(path_type=Path))
def check_config(config_path: Path) -> None:
    """Validate a configuration file and print the effective settings (passwords redacted)."""
    config = _load(config_path, {})
    notes = _secret_notes(config, strict=False)
    click.echo(f"{config.source}: ok")
    click.echo(f"interval {config.interval}s, max_groups {config.max_groups}, "
               f"dimensions {', '.join(config.dimensions)}, listen {config.listen or 'off'}")
    click.echo(f"log format {config.log_format}, level {config.log_level}; web config "
               f"{config.web_config_file or 'off (plain HTTP, no authentication)'}")
    click.echo(_describe_otlp(config.otlp))
    click.echo("thresholds: " + ", ".join(f"{t.name} {value}"
                                          for t, value in config.thresholds.items()))
    for t in config.targets:
        secret = ("credential " + t.password_credential if t.password_credential
                  else f"password file {t.password_file}" if t.password_file else "libpq")
        click.echo(f"target {t.name}: {t.redacted_dsn} (every {t.interval}s, password: "
                   f"{secret})")
    for note in notes:
        click.echo(f"note: {note}")


def _describe_otlp(otlp: cfg.OtlpConfig) -> str:
    """The [otlp] table as set; unset keys fall back to the OTEL_* variables. Header values
    are often tokens: only their names are shown."""
    from .export.otel import otlp_enabled

    def shown(value: object) -> str:
        return "from OTEL_* or default" if value is None else str(value)

    headers = ", ".join(f"{k}=<redacted>" for k in otlp.headers or {}) or shown(None)
    return (f"otlp: {'on' if otlp_enabled(otlp) else 'off'}, endpoint {shown(otlp.endpoint)}, "
            f"protocol {shown(otlp.protocol)}, headers {headers}, certificate "
            f"{shown(otlp.certificate)}, insecure {shown(otlp.insecure)}, export_interval "
            f"{shown(otlp.export_interval)}")


@main.command()
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Override an alert threshold or setting (selector, group_by, runbook_base; "
                   "see alerts/README.md); repeatable.")
def rules(sets: tuple[str, ...]) -> None:
    """Print the Prometheus alert rules, with thresholds and settings overridden by --set."""
    from .alert_rules import parse_sets, render_rules

    try:
        click.echo(render_rules(*parse_sets(sets)), nl=False)
    except AgentError as exc:
        _fail(str(exc))


@main.command()
@click.option("--keep", is_flag=True, help="Keep the server, workload and agent running "
                                           "until interrupted.")
@click.option("--polls", type=int, default=3, show_default=True,
              help="Daemon polls to show before stopping.")
def demo(keep: bool, polls: int) -> None:
    """Reproduce "pool 100/100 with one user" on a throwaway PostgreSQL and diagnose it."""
    from .demo.scenario import run_demo

    try:
        sys.exit(run_demo(keep=keep, polls=polls))
    except AgentError as exc:
        _fail(str(exc))
