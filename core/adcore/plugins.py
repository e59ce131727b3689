"""Plugin loading and the registry of detectors, backbones and data sets.

Loading is a function, not an import side effect. Built-in plugins
(:data:`DEFAULT_PLUGINS`) register through the same hooks as third-party
ones. Unlike ``pluggy.PluginManager.load_setuptools_entrypoints`` we load each
entry point on its own and record its failure, so one broken plugin never
stops the others or any command.

The rules (see ``docs/writing-a-plugin.md``):

* A plugin failing in any way (an exception, ``SystemExit``, a syntax error;
  not Ctrl-C) at import or in a hook is recorded on its :class:`PluginInfo`
  as one line; everything else loads.
* Whatever a plugin prints while loading is kept in ``PluginInfo.output``,
  never on stdout, so ``adcore plugins --json`` stays valid JSON.
* Names and aliases match :data:`NAME_PATTERN`. A refused registration is
  recorded as that plugin's error; its other valid names still register. A
  hook that raises registers none of its names.
* A name or alias claimed by two distributions belongs to neither until the
  user uninstalls one or chooses with ``ADCORE_LOAD_PLUGINS``: the first one
  found must not win, or a look-alike could take over ``patchcore``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy

from adcore import __version__, hookspecs
from adcore.errors import PluginError, UnknownNameError

__all__ = [
    "DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "KINDS", "NAME_PATTERN",
    "Conflict", "Entry", "PluginInfo", "Registry", "get_registry",
]

ENTRY_POINT_GROUP = "adcore"
KINDS = ("detector", "backbone", "dataset")
DEFAULT_PLUGINS = ("adcore.builtin",)
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
_BUILTIN_DISTRIBUTION = "adcore"
_HOOKS = {"detector": "register_detectors", "backbone": "register_backbones", "dataset": "register_datasets"}
_TARGET_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# Everything a plugin can raise except Ctrl-C: a plugin must not end the command, the user may.
_PLUGIN_FAILURES = (Exception, SystemExit)


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
        """Import and return the registered object; any failure becomes one line naming the plugin."""
        module_name, _, attribute = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except _PLUGIN_FAILURES as exc:
            raise PluginError(
                f"{self.kind} '{self.name}' of plugin {self.plugin} cannot be loaded "
                f"({self.target}): {_one_line(exc)}"
            ) from exc


@attrs.frozen
class Conflict:
    """A name claimed by several distributions, which therefore belongs to none of them."""

    kind: str
    name: str
    distributions: tuple[str, ...]
    builtin: bool = False

    def message(self) -> str:
        """One line naming every claimant and the two ways out."""
        claimants = [f"{d} (built-in)" if self.builtin and d == _BUILTIN_DISTRIBUTION else d
                     for d in self.distributions]
        both, neither = ("both ", "neither") if len(claimants) == 2 else ("", "none")
        text = (f"{self.kind} '{self.name}' is registered by {both}{_join(claimants)}, so {neither} is used "
                "until you resolve it: ")
        if self.builtin:
            others = _join([d for d in self.distributions if d != _BUILTIN_DISTRIBUTION])
            return text + (f"uninstall {others}, or set ADCORE_LOAD_PLUGINS to the comma-separated plugins "
                           "to load without it (built-ins always load).")
        return text + ("uninstall one of them, or set ADCORE_LOAD_PLUGINS to the comma-separated plugins "
                       "to load so that only one of them loads.")


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
    conflicts: list[Conflict] = attrs.field(factory=list)
    error: str | None = None
    output: str = ""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def record(self, problem: str) -> None:
        """Add one problem to ``error``, which stays a single line however many there are."""
        problem = " ".join(problem.split())
        self.error = problem if self.error is None else f"{self.error}; {problem}"


# (who claimed it, what they registered) for every name and alias of one kind
_Claims = dict[str, list[tuple[PluginInfo, Entry]]]


class Registry:
    """The name tables, filled by calling every loaded plugin's hooks."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.warnings: list[str] = []
        self._claims: dict[str, _Claims] = {kind: {} for kind in KINDS}
        self._tables: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[str, dict[str, Conflict]] = {kind: {} for kind in KINDS}

    # -- loading ---------------------------------------------------------
    def load(self, allowed: set[str] | None) -> None:
        """Register built-ins, then each allowed entry point, isolating failures."""
        installed: list[tuple[str, str]] = []
        for module_name in DEFAULT_PLUGINS:
            info = PluginInfo(name=module_name.rsplit(".", 1)[-1], distribution=_BUILTIN_DISTRIBUTION,
                              version=__version__, module=module_name, builtin=True)
            self._add(info, functools.partial(importlib.import_module, module_name))
        entry_points, unreadable = _entry_points()
        for info in unreadable:
            installed.append((info.name, info.distribution))
            if allowed is None or _selected(allowed, info.name, info.distribution):
                self.plugins.append(info)
        for ep in entry_points:
            dist = (ep.dist.name if ep.dist is not None else None) or "?"
            installed.append((ep.name, dist))
            if allowed is not None and not _selected(allowed, ep.name, dist):
                continue
            version = (ep.dist.version if ep.dist is not None else None) or "?"
            self._add(PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value), ep.load)
        if allowed is not None:
            self.warnings.extend(_unknown_selections(allowed, installed))
        self._resolve()

    def _add(self, info: PluginInfo, importer: Callable[[], Any]) -> None:
        self.plugins.append(info)
        with _captured_output() as output:
            module = self._import(info, importer)
            if module is not None:
                self._collect(info, module)
        info.output = output.getvalue()

    def _import(self, info: PluginInfo, importer: Callable[[], Any]) -> Any:
        """The plugin's hook module registered with pluggy, or None (and its error recorded)."""
        try:
            module = importer()
            # distribution and entry point: two distributions may use the same entry-point name
            self.plugin_manager.register(module, name=f"{info.distribution}:{info.name}")
        except _PLUGIN_FAILURES as exc:
            info.record(_one_line(exc))
            return None
        try:
            self.plugin_manager.check_pending()
        except Exception as exc:  # a misspelt hook name: report it, keep the plugin out
            info.record(_one_line(exc))
            self.plugin_manager.unregister(module)
            return None
        info.hooks = _hook_names(self.plugin_manager, module)
        return module

    def _collect(self, info: PluginInfo, module: Any) -> None:
        """Call this plugin's registration hooks, each on its own."""
        for kind, hook_name in _HOOKS.items():
            for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
                if impl.plugin is module:
                    self._call_hook(info, kind, impl)

    def _call_hook(self, info: PluginInfo, kind: str, impl: pluggy.HookImpl) -> None:
        """Keep a hook's names only if it returns: a half-run hook may have registered half a method."""
        staged: list[Entry] = []
        register = _register_function(info, kind, staged)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except _PLUGIN_FAILURES as exc:
            info.record(f"{impl.function.__name__} failed, so none of its names are used: {_one_line(exc)}")
            return
        for entry in staged:
            self._claim(info, entry)

    def _claim(self, info: PluginInfo, entry: Entry) -> None:
        """Note who claims a name and its aliases; a distribution may claim each only once."""
        claims = self._claims[entry.kind]
        keys = (entry.name, *entry.aliases)
        repeated = next((key for key in keys if keys.count(key) > 1
                         or any(other.plugin == entry.plugin for _, other in claims.get(key, []))), None)
        if repeated is not None:
            info.record(f"refused {entry.kind} '{entry.name}': {entry.plugin} registers "
                        f"'{repeated}' more than once")
            return
        for key in keys:
            claims.setdefault(key, []).append((info, entry))

    def _resolve(self) -> None:
        """Fill the name tables from the claims; a name claimed by two distributions goes to neither."""
        for info in self.plugins:
            info.provides, info.conflicts = {}, []
        for kind in KINDS:
            claims = self._claims[kind]
            self._conflicts[kind] = {key: _conflict(kind, key, claimants) for key, claimants in claims.items()
                                     if len({entry.plugin for _, entry in claimants}) > 1}
            for key, claimants in claims.items():
                if key in self._conflicts[kind]:
                    for info, _ in claimants:
                        info.conflicts.append(self._conflicts[kind][key])
                    continue
                info, entry = claimants[0]
                if key != entry.name:
                    self._aliases[kind][key] = entry.name
                else:
                    aliases = tuple(a for a in entry.aliases if a not in self._conflicts[kind])
                    self._tables[kind][key] = attrs.evolve(entry, aliases=aliases)
                    info.provides.setdefault(kind, []).append(key)

    # -- lookup ----------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        """Sorted usable names of one kind (names in conflict are not usable)."""
        return sorted(self._tables[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._tables[kind][name] for name in self.names(kind)]

    def conflicts(self, kind: str) -> list[Conflict]:
        """Names of one kind that several distributions claim, sorted."""
        return [self._conflicts[kind][name] for name in sorted(self._conflicts[kind])]

    def get(self, kind: str, name: str) -> Entry:
        """Look a name (or alias) up; names in conflict say how to resolve, unknown ones get suggestions."""
        table = self._tables[kind]
        for candidate in (name, self._aliases[kind].get(name, name)):
            if candidate in self._conflicts[kind]:
                raise PluginError(self._conflicts[kind][candidate].message())
        resolved = self._aliases[kind].get(name, name)
        if resolved in table:
            return table[resolved]
        candidates = [*table, *self._aliases[kind], *self._conflicts[kind]]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none installed"
        raise UnknownNameError(f"Unknown {kind} '{name}'.{hint} Available: {known}. "
                               "See `adcore plugins` for what is installed and any load errors.")

    def load_object(self, kind: str, name: str) -> Any:
        """Import the object registered under ``name``."""
        return self.get(kind, name).load()


def _entry_points() -> tuple[list[metadata.EntryPoint], list[PluginInfo]]:
    """All ``adcore`` entry points, and the plugins whose entry_points.txt cannot be read."""
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP)), []
    except Exception:  # one malformed file fails the whole scan: read distribution by distribution
        return _entry_points_one_by_one()


def _entry_points_one_by_one() -> tuple[list[metadata.EntryPoint], list[PluginInfo]]:
    """Like ``metadata.entry_points``: the first distribution of a name on the path hides later ones."""
    found: list[metadata.EntryPoint] = []
    unreadable: list[PluginInfo] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or "?"
        if _normalised(name) in seen:
            continue
        seen.add(_normalised(name))
        try:
            found.extend(ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP)
        except Exception as exc:  # noqa: BLE001 - only an adcore plugin's broken file is ours to report
            if f"[{ENTRY_POINT_GROUP}]" in (dist.read_text("entry_points.txt") or ""):
                unreadable.append(PluginInfo(name=name, distribution=name, version=dist.version or "?",
                                             module="?", error=f"entry_points.txt: {_one_line(exc)}"))
    return found, unreadable


def _register_function(info: PluginInfo, kind: str, staged: list[Entry]) -> Callable[..., None]:
    """The ``register`` a hook receives: it checks each call and refuses bad ones without raising."""

    def register(name: str, target: str, *, description: str = "", aliases: Sequence[str] = ()) -> None:
        problem = _invalid_registration(name, target, description, aliases)
        if problem is not None:
            info.record(f"refused {kind} {name!r}: {problem}")
            return
        staged.append(Entry(kind=kind, name=name, target=target, plugin=info.distribution,
                            description=description, aliases=tuple(aliases)))

    register.__qualname__ = "register"  # what a plugin author sees in a TypeError about its arguments
    return register


def _invalid_registration(name: object, target: object, description: object, aliases: object) -> str | None:
    """Why a registration is refused, or None when it is fine."""
    rule = f"names and aliases must match {NAME_PATTERN.pattern}"
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return rule
    if isinstance(aliases, str) or not isinstance(aliases, (tuple, list)):
        return f"aliases must be a tuple or list of names; got {aliases!r}"
    for alias in aliases:
        if not isinstance(alias, str) or not NAME_PATTERN.fullmatch(alias):
            return f"alias {alias!r}: {rule}"
    if not isinstance(target, str) or not _TARGET_PATTERN.fullmatch(target):
        return f"target {target!r} is not 'module:attribute'"
    if not isinstance(description, str):
        return f"description must be a string; got {type(description).__name__}"
    return None


def _conflict(kind: str, name: str, claimants: list[tuple[PluginInfo, Entry]]) -> Conflict:
    """Built-in first, then the others alphabetically, so discovery order never shows."""
    builtin = any(info.builtin for info, _ in claimants)
    third_party = sorted({entry.plugin for info, entry in claimants if not info.builtin})
    distributions = (_BUILTIN_DISTRIBUTION, *third_party) if builtin else tuple(third_party)
    return Conflict(kind=kind, name=name, distributions=distributions, builtin=builtin)


def _hook_names(plugin_manager: pluggy.PluginManager, module: Any) -> list[str]:
    return sorted(
        name for name in dir(plugin_manager.hook)
        if not name.startswith("_")
        and any(impl.plugin is module for impl in getattr(plugin_manager.hook, name).get_hookimpls())
    )


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """Keep what a plugin prints while loading, so the command's stdout stays its own (``--json``)."""
    buffer = io.StringIO()
    with tempfile.TemporaryFile() as descriptor_output:
        try:
            with (_stdout_descriptor_to(descriptor_output.fileno()), contextlib.redirect_stdout(buffer),
                  contextlib.redirect_stderr(buffer)):
                yield buffer
        finally:
            descriptor_output.seek(0)
            buffer.write(descriptor_output.read().decode(errors="replace"))


@contextlib.contextmanager
def _stdout_descriptor_to(target: int) -> Iterator[None]:
    """Writes to descriptor 1 that bypass ``sys.stdout`` (C code, ``os.write``) go to ``target`` meanwhile."""
    for stream in (sys.stdout, sys.__stdout__):
        _flush(stream)
    try:
        saved = os.dup(1)
    except OSError:  # no stdout descriptor: nothing to protect
        yield
        return
    try:
        os.dup2(target, 1)
        yield
    finally:
        _flush(sys.__stdout__)
        os.dup2(saved, 1)
        os.close(saved)


def _flush(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a closed or replaced stream has nothing to flush
        stream.flush()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _normalised(name: str) -> str:
    """Distribution names compare like pip compares them: case and ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _selected(allowed: set[str], entry_point: str, distribution: str) -> bool:
    wanted = {_normalised(name) for name in allowed}
    return _normalised(entry_point) in wanted or _normalised(distribution) in wanted


def _unknown_selections(allowed: set[str], installed: list[tuple[str, str]]) -> list[str]:
    """One warning naming what ``ADCORE_LOAD_PLUGINS`` asks for but is not installed."""
    builtins = [(module.rsplit(".", 1)[-1], _BUILTIN_DISTRIBUTION) for module in DEFAULT_PLUGINS]
    missing = sorted(name for name in allowed
                     if not any(_selected({name}, ep, dist) for ep, dist in installed + builtins))
    if not missing:
        return []
    available = ", ".join(f"{ep} ({dist})" for ep, dist in sorted(installed)) or "none"
    verb = "is" if len(missing) == 1 else "are"
    return [f"ADCORE_LOAD_PLUGINS names {_join(missing)}, which {verb} not installed; "
            f"installed plugins: {available}"]


def _allowed_from_env() -> set[str] | None:
    value = os.environ.get("ADCORE_LOAD_PLUGINS")
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Load plugins once per process (``ADCORE_LOAD_PLUGINS`` limits which; a name not installed warns)."""
    registry = Registry()
    registry.load(_allowed_from_env())
    for warning in registry.warnings:
        print(f"Warning: {' '.join(warning.split())}", file=sys.stderr)
    return registry
