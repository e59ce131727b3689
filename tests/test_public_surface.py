"""Plugins reach the core only through its public names: what a module lists in ``__all__``."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _core_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from adcore... import name`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "adcore":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_plugins_and_their_tests_import_only_public_core_names():
    wrong = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for line, module, name in _core_imports(path):
            if importlib.util.find_spec(module) and _is_module(f"{module}.{name}"):
                continue  # `from adcore import metrics`: a module, whose names are checked where used
            owner = importlib.import_module(module)
            public = getattr(owner, "__all__", None)
            if name.startswith("_") or public is None or name not in public:
                wrong.append(f"{path.relative_to(PLUGINS)}:{line}: {module}.{name}")
    assert not wrong, "private or unlisted core names imported by plugins:\n" + "\n".join(wrong)
