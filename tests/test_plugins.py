"""Plugin loading: built-ins, entry points, isolation of failures, clashes, lazy imports."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata

import pytest

from adcore import plugins
from adcore.errors import PluginError, UnknownNameError
from adcore.hookspecs import hookimpl


class FakeEntryPoint:
    """Stands in for an installed distribution's entry point."""

    def __init__(self, name: str, module: types.ModuleType | Exception, dist: str = "fake-dist") -> None:
        self.name = name
        self.value = f"{name}_module"
        self._module = module
        self.dist = types.SimpleNamespace(name=dist, version="9.9")

    def load(self) -> types.ModuleType:
        if isinstance(self._module, Exception):
            raise self._module
        return self._module


def _module(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in hooks.items():
        setattr(module, key, value)
    return module


def _registry(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint, allowed: set[str] | None = None):
    monkeypatch.setattr(metadata, "entry_points", lambda group: list(eps) if group == "adcore" else [])
    registry = plugins.Registry()
    registry.load(allowed)
    return registry


def _detector_plugin(name: str):
    @hookimpl
    def register_detectors(register):
        register(name, "collections:OrderedDict", description="test")

    return _module(f"plugin_{name}", register_detectors=register_detectors)


def test_builtins_register_through_the_same_hooks(monkeypatch):
    registry = _registry(monkeypatch)
    assert registry.names("backbone") == ["efficientnet_lite0", "efficientnet_lite2", "resnet18", "wide_resnet50_2"]
    assert registry.names("dataset") == ["folder", "synthetic"]
    assert registry.names("detector") == []
    assert registry.plugins[0].builtin and registry.plugins[0].error is None


def test_installed_plugin_registers_and_load_filter(monkeypatch):
    ep = FakeEntryPoint("alpha", _detector_plugin("alpha"))
    assert _registry(monkeypatch, ep).names("detector") == ["alpha"]
    assert _registry(monkeypatch, ep, allowed=set()).names("detector") == []
    assert _registry(monkeypatch, ep, allowed={"fake-dist"}).names("detector") == ["alpha"]


def test_broken_plugin_is_recorded_and_others_still_load(monkeypatch):
    broken = FakeEntryPoint("broken", ImportError("No module named 'torchx'"), dist="broken-dist")
    good = FakeEntryPoint("alpha", _detector_plugin("alpha"))
    registry = _registry(monkeypatch, broken, good)
    assert registry.names("detector") == ["alpha"]
    info = next(p for p in registry.plugins if p.name == "broken")
    assert info.error == "ImportError: No module named 'torchx'"


def test_misspelt_hook_is_reported(monkeypatch):
    @hookimpl
    def register_detector(register):  # missing "s": not a hook
        register("x", "a:b")

    ep = FakeEntryPoint("typo", _module("typo", register_detector=register_detector))
    registry = _registry(monkeypatch, ep)
    info = next(p for p in registry.plugins if p.name == "typo")
    assert info.error is not None and "register_detector" in info.error


def test_name_clash_belongs_to_neither_and_names_both_distributions(monkeypatch):
    first = FakeEntryPoint("one", _detector_plugin("same"), dist="dist-one")
    second = FakeEntryPoint("two", _detector_plugin("same"), dist="dist-two")
    registry = _registry(monkeypatch, first, second)
    assert registry.names("detector") == []
    with pytest.raises(PluginError, match="'same' is registered by both dist-one and dist-two.*ADCORE_LOAD_PLUGINS"):
        registry.get("detector", "same")
    assert all(p.conflicts == registry.conflicts("detector") for p in registry.plugins if not p.builtin)
    assert _registry(monkeypatch, first, second, allowed={"dist-two"}).get("detector", "same").plugin == "dist-two"


def test_unknown_name_suggests_close_matches(monkeypatch):
    registry = _registry(monkeypatch, FakeEntryPoint("alpha", _detector_plugin("patchcore")))
    with pytest.raises(UnknownNameError, match="Did you mean 'patchcore'.*adcore plugins"):
        registry.get("detector", "patchcor")


def test_aliases_resolve(monkeypatch):
    registry = _registry(monkeypatch)
    assert registry.get("backbone", "wrn50").name == "wide_resnet50_2"


def test_listing_plugins_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from adcore.cli.main import cli;"
            "r = CliRunner().invoke(cli, ['plugins']); assert r.exit_code == 0, r.output;"
            "CliRunner().invoke(cli, ['--help']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
