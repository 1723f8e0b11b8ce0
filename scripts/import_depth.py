"""The import graph of the runtime packages: for each module, the longest chain of module-level
imports inside huref/stylegan2 it starts, and which modules import which.

    python scripts/import_depth.py [ROOT]        # ROOT: a checkout (default: this one)

Imports inside functions (lazy imports) are not counted: they run only when the function does.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

PACKAGES = ("huref", "stylegan2")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports at module level."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(root, p): p for package in PACKAGES for p in (root / package).rglob("*.py")}
    return {name: top_level_imports(path, name, set(files)) for name, path in files.items()}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    edges = graph(root)

    @lru_cache(maxsize=None)
    def depth(name: str, seen: frozenset = frozenset()) -> int:
        return 1 + max((depth(d, seen | {name}) for d in edges[name] if d not in seen), default=0)

    depths = {name: depth(name) for name in edges}
    for name in sorted(edges, key=lambda n: (-depths[n], n)):
        print(f"{depths[name]:2d}  {name:32s} <- {', '.join(sorted(edges[name])) or '-'}")
    print(f"modules {len(edges)}, deepest chain {max(depths.values())}, import edges {sum(map(len, edges.values()))}")


if __name__ == "__main__":
    main()
