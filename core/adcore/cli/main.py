"""Entry point and the single error boundary of the CLI."""

from __future__ import annotations

import sys
from typing import Any

import click

from adcore import __version__


class _Group(click.Group):
    """Turns adcore's own errors into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from adcore.errors import AdcoreError

        try:
            return super().invoke(ctx)
        except AdcoreError as exc:
            click.echo(f"Error: {' '.join(str(exc).split())}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; no partial output was kept. Run the same command again to resume "
                       "training from its last finished epoch.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adcore")
def cli() -> None:
    """adcore: visual anomaly detection and localization with pluggable methods."""


def _register_commands() -> None:
    from adcore.cli import benchmark_cmd, plugins_cmd, predict_cmd, report_cmd, run_cmd

    cli.add_command(plugins_cmd.plugins)
    cli.add_command(plugins_cmd.list_names)
    cli.add_command(run_cmd.run)
    cli.add_command(predict_cmd.predict)
    cli.add_command(benchmark_cmd.benchmark)
    cli.add_command(report_cmd.report)


_register_commands()
