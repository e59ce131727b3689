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


def test_the_plugin_guide_example_detector_works(tmp_path):
    import re

    import torch

    guide = (DOCS / "writing-a-plugin.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", guide, re.S) if "class MyMethod(" in block)
    namespace: dict = {}
    exec(compile(code, "writing-a-plugin.md", "exec"), namespace)
    detector = namespace["MyMethod"]().fit(torch.rand(3, 3, 64, 64))
    prediction = detector.predict(torch.rand(2, 3, 64, 64), progress=None)
    assert prediction.scores.shape == (2,) and prediction.anomaly_maps.shape == (2, 64, 64)
    assert set(detector._get_state()) == {"mean"}
    spec = detector._state_spec()["mean"]
    assert spec.shape[0] == detector._get_state()["mean"].shape[0] and spec.dtype == torch.float32


def test_architecture_lists_every_core_module():
    """docs/architecture.md names every module of the core, so a newcomer finds where each step lives."""
    text = (DOCS / "architecture.md").read_text()
    core = Path(__file__).resolve().parents[1] / "core" / "adcore"
    missing = [str(p.relative_to(core)) for p in sorted(core.rglob("*.py"))
               if p.parent.name != "cli" and (p.name != "__init__.py" or p.parent in (core / "backbones",
                                                                                     core / "data"))
               and f" {p.name} " not in text]
    assert not missing, f"docs/architecture.md does not list {missing}"
