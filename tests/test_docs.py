"""Docs stay in step with the code: every hook is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from adcore import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_hook_is_documented_in_the_plugin_guide():
    guide = (DOCS / "writing-a-plugin.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert hooks == ["register_backbones", "register_datasets", "register_detectors"]
    for name in hooks:
        assert f"### {name}" in guide, f"docs/writing-a-plugin.md lacks a section for {name}"
