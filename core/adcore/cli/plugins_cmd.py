"""``adcore plugins`` and ``adcore list``: what is installed, without importing torch."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugins, their versions, what each registers and any load error."""
    from adcore.plugins import get_registry

    infos = get_registry().plugins
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    for info in infos:
        origin = "built-in" if info.builtin else f"{info.distribution} {info.version}"
        click.echo(f"{info.name} ({origin})")
        for kind, names in sorted(info.provides.items()):
            click.echo(f"  {kind}s: {', '.join(names)}")
        if info.error:
            click.echo(f"  LOAD ERROR: {info.error}")


@click.command("list")
@click.argument("kind", type=click.Choice(["detectors", "backbones", "datasets"]))
def list_names(kind: str) -> None:
    """List registered detectors, backbones or data sets."""
    from adcore.plugins import get_registry

    for entry in get_registry().entries(kind[:-1]):
        aliases = f" (alias: {', '.join(entry.aliases)})" if entry.aliases else ""
        click.echo(f"{entry.name}{aliases}  [{entry.plugin}]  {entry.description}")
