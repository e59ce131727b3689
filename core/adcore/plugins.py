"""Plugin loading and the registry of detectors, backbones and data sets.

Loading is a function, not an import side effect. Built-in plugins
(:data:`DEFAULT_PLUGINS`) register through the same hooks as third-party
ones. Unlike ``pluggy.PluginManager.load_setuptools_entrypoints`` we load each
entry point on its own and record its failure, so one broken plugin never
stops the others or any command.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from importlib import metadata
from typing import Any, Callable

import attrs
import pluggy

from adcore import __version__, hookspecs
from adcore.errors import PluginError, UnknownNameError

ENTRY_POINT_GROUP = "adcore"
KINDS = ("detector", "backbone", "dataset")
DEFAULT_PLUGINS = ("adcore.builtin",)
_HOOKS = {"detector": "register_detectors", "backbone": "register_backbones", "dataset": "register_datasets"}


@attrs.frozen
class Entry:
    """One registered name: what it is, where it lives, who registered it."""

    kind: str
    name: str
    target: str
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()

    def load(self) -> Any:
        """Import and return the registered object (class or factory)."""
        module_name, _, attribute = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.kind} '{self.name}' from {self.plugin} cannot be loaded "
                f"({self.target}): {type(exc).__name__}: {exc}"
            ) from exc


@attrs.define
class PluginInfo:
    """What ``adcore plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool = False
    hooks: list[str] = attrs.field(factory=list)
    provides: dict[str, list[str]] = attrs.field(factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Registry:
    """The name tables, filled by calling every loaded plugin's hooks."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._tables: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    # -- loading ---------------------------------------------------------
    def load(self, allowed: set[str] | None) -> None:
        """Register built-ins, then each allowed entry point, isolating failures."""
        for module_name in DEFAULT_PLUGINS:
            info = PluginInfo(name=module_name.rsplit(".", 1)[-1], distribution="adcore",
                              version=__version__, module=module_name, builtin=True)
            self._add(info, lambda m=module_name: importlib.import_module(m))
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value)
            self._add(info, ep.load)

    def _add(self, info: PluginInfo, importer: Callable[[], Any]) -> None:
        self.plugins.append(info)
        try:
            module = importer()
            self.plugin_manager.register(module, name=info.name)
        except Exception as exc:  # a plugin may fail in any way; record, never crash
            info.error = _one_line(exc)
            return
        try:
            self.plugin_manager.check_pending()
        except Exception as exc:  # a misspelt hook name: report it, keep the plugin out
            info.error = _one_line(exc)
            self.plugin_manager.unregister(module)
            return
        info.hooks = sorted(
            impl_name for impl_name in dir(self.plugin_manager.hook)
            if not impl_name.startswith("_")
            and any(impl.plugin is module for impl in getattr(self.plugin_manager.hook, impl_name).get_hookimpls())
        )
        self._collect(info, module)

    def _collect(self, info: PluginInfo, module: Any) -> None:
        """Call this plugin's registration hooks; commit its names only if all succeed."""
        staged: list[Entry] = []
        try:
            for kind, hook_name in _HOOKS.items():
                for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
                    if impl.plugin is not module:
                        continue

                    def register(name: str, target: str, *, description: str = "",
                                 aliases: tuple[str, ...] | list[str] = (), _kind: str = kind) -> None:
                        staged.append(Entry(kind=_kind, name=name, target=target, plugin=info.distribution,
                                            description=description, aliases=tuple(aliases)))

                    impl.function(**{arg: register for arg in impl.argnames})
            for entry in staged:
                self._check_free(entry, staged)
        except Exception as exc:
            info.error = _one_line(exc)
            return
        for entry in staged:
            self._tables[entry.kind][entry.name] = entry
            for alias in entry.aliases:
                self._aliases[entry.kind][alias] = entry.name
            info.provides.setdefault(entry.kind, []).append(entry.name)

    def _check_free(self, entry: Entry, staged: list[Entry]) -> None:
        if not entry.name or entry.name != entry.name.lower():
            raise PluginError(f"{entry.plugin} registers an invalid {entry.kind} name {entry.name!r} "
                              "(names are lowercase strings)")
        if ":" not in entry.target:
            raise PluginError(f"{entry.plugin} registers {entry.kind} '{entry.name}' with target "
                              f"{entry.target!r}; expected 'module:attribute'")
        for name in (entry.name, *entry.aliases):
            owner = self._tables[entry.kind].get(name) or self._tables[entry.kind].get(
                self._aliases[entry.kind].get(name, ""))
            if owner is not None:
                raise PluginError(f"{entry.kind} name '{name}' of {entry.plugin} clashes with the one "
                                  f"already registered by {owner.plugin}")
        if sum(e.kind == entry.kind and e.name == entry.name for e in staged) > 1:
            raise PluginError(f"{entry.plugin} registers the {entry.kind} name '{entry.name}' twice")

    # -- lookup ----------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        """Sorted registered names of one kind."""
        return sorted(self._tables[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._tables[kind][name] for name in self.names(kind)]

    def get(self, kind: str, name: str) -> Entry:
        """Look a name (or alias) up; unknown names get suggestions."""
        table = self._tables[kind]
        resolved = self._aliases[kind].get(name, name)
        if resolved in table:
            return table[resolved]
        candidates = list(table) + list(self._aliases[kind])
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none installed"
        raise UnknownNameError(f"Unknown {kind} '{name}'.{hint} Available: {known}. "
                               "See `adcore plugins` for what is installed and any load errors.")

    def load_object(self, kind: str, name: str) -> Any:
        """Import the object registered under ``name``."""
        return self.get(kind, name).load()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _allowed_from_env() -> set[str] | None:
    value = os.environ.get("ADCORE_LOAD_PLUGINS")
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Load plugins once per process (``ADCORE_LOAD_PLUGINS`` limits which)."""
    registry = Registry()
    registry.load(_allowed_from_env())
    return registry
