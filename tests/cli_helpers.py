"""Calling the command line in tests, and what a refused command must look like."""

from __future__ import annotations

from click.testing import CliRunner, Result

from adcore.cli.main import cli


def invoke(*args: object) -> Result:
    """``adcore ARGS...`` in this process; exceptions propagate (a traceback is a failed test)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result: Result) -> str:
    """The refusal's one line ("Error: ..."), after checking it is one line and a non-zero exit."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]
