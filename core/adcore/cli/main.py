"""Entry point and the single error boundary of the CLI."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from adcore import __version__

#: Signals that stop a command the way Ctrl-C does: cleanup runs, exit status 128 + the signal number.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_RESUME = "no partial output was kept. Run the same command again to resume training from its last finished epoch."


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal; a KeyboardInterrupt, so every cleanup that Ctrl-C runs runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Group(click.Group):
    """Turns adcore's own errors into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from adcore.errors import AdcoreError

        with _stopping_on_signals():
            try:
                return super().invoke(ctx)
            except AdcoreError as exc:
                click.echo(f"Error: {' '.join(str(exc).split())}", err=True)
                sys.exit(1)
            except KeyboardInterrupt as exc:
                signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
                name = "Interrupted" if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}"
                click.echo(f"{name}; {_RESUME}", err=True)
                sys.exit(128 + signum)


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """Raise :class:`Stopped` on SIGINT, SIGTERM or SIGHUP, then ignore them while cleanup runs.

    Signals the command was started with ignored (``nohup``, a background job)
    stay ignored. The earlier handlers come back when no signal arrived; after
    one, the signals stay ignored until the process exits, so a second Ctrl-C
    during cleanup or shutdown never prints a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}
    stopped = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopped
        stopped = True
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    for sig in previous:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        if not stopped:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adcore")
def cli() -> None:
    """adcore: visual anomaly detection and localization with pluggable methods."""


def _register_commands() -> None:
    from adcore.cli import benchmark_cmd, export_cmd, plugins_cmd, predict_cmd, report_cmd, run_cmd, serve_cmd

    cli.add_command(plugins_cmd.plugins)
    cli.add_command(plugins_cmd.list_names)
    cli.add_command(run_cmd.run)
    cli.add_command(predict_cmd.predict)
    cli.add_command(benchmark_cmd.benchmark)
    cli.add_command(report_cmd.report)
    cli.add_command(export_cmd.export)
    cli.add_command(serve_cmd.serve)


_register_commands()
