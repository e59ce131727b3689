"""``adcore plugins`` and ``adcore list``: what is installed, without importing torch."""

from __future__ import annotations

import json

import click

__all__ = ["list_names", "plugins"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugins, their versions, what each registers, name conflicts and any load error."""
    from adcore.plugins import get_registry

    infos = get_registry().plugins  # loaded before anything is echoed: plugin output never reaches stdout
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    for info in infos:
        origin = "built-in" if info.builtin else f"{info.distribution} {info.version}"
        click.echo(f"{info.name} ({origin})")
        for kind, names in sorted(info.provides.items()):
            click.echo(f"  {kind}s: {', '.join(names)}")
        for conflict in info.conflicts:
            click.echo(f"  CONFLICT: {conflict.message()}")
        if info.error:
            click.echo(f"  LOAD ERROR: {info.error}")
        if info.output.strip():
            click.echo(f"  printed while loading: {_shortened(info.output)}")


@click.command("list")
@click.argument("kind", type=click.Choice(["detectors", "backbones", "datasets"]))
def list_names(kind: str) -> None:
    """List registered detectors, backbones or data sets (and names in conflict, which none can use)."""
    from adcore.plugins import get_registry

    registry = get_registry()
    for entry in registry.entries(kind[:-1]):
        aliases = f" (alias: {', '.join(entry.aliases)})" if entry.aliases else ""
        click.echo(f"{entry.name}{aliases}  [{entry.plugin}]  {entry.description}")
    for conflict in registry.conflicts(kind[:-1]):
        click.echo(f"{conflict.name}  [{', '.join(conflict.distributions)}]  CONFLICT: {conflict.message()}")


def _shortened(text: str, limit: int = 120) -> str:
    """Plugin output on one line, cut to a glance; ``--json`` has all of it."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[:limit - 3]}..."
