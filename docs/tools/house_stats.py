"""Lines per module and the longest functions of the core and the plugins, for reviewing a clean-up.

    python docs/tools/house_stats.py [--top 15]

Counts physical lines of each ``.py`` file under core/adcore and plugins/*/src,
and the length of each function (its ``def`` through its last line, nested
functions counted inside their parent too).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sources() -> list[Path]:
    """The product's Python modules (tests and benchmarks left out)."""
    return sorted([*ROOT.glob("core/adcore/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")])


def functions(path: Path) -> list[tuple[int, str]]:
    """(length in lines, qualified name) of every function in one module."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert child.end_lineno is not None
                found.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    modules = [(len(p.read_text(encoding="utf-8").splitlines()), p.relative_to(ROOT)) for p in sources()]
    print(f"{len(modules)} modules, {sum(n for n, _ in modules)} lines")
    print(f"largest {args.top} modules:")
    for lines, path in sorted(modules, reverse=True)[:args.top]:
        print(f"  {lines:5d}  {path}")
    longest = sorted(((n, f"{p.relative_to(ROOT)}:{name}") for p in sources() for n, name in functions(p)),
                     reverse=True)
    print(f"longest {args.top} functions:")
    for lines, name in longest[:args.top]:
        print(f"  {lines:5d}  {name}")


if __name__ == "__main__":
    main()
