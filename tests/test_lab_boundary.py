"""The runtime packages stand apart from the lab: no module of huref/ or stylegan2/ imports huref_lab,
scripts or tests (read from the source with `ast`, so an import inside a function counts too)."""

import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("huref_lab", "scripts", "tests")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports; relative ones stay inside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_runtime_code_never_imports_the_lab():
    runtime = sorted(p for package in ("huref", "stylegan2") for p in (REPO / package).rglob("*.py"))
    assert len(runtime) > 20
    offenders = {str(p.relative_to(REPO)): sorted(imported_modules(p) & set(FORBIDDEN)) for p in runtime}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_check_sees_imports_anywhere_in_a_module(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from huref_lab import attacks\n    import scripts.zoo\n"
                      "    importlib.import_module('tests.conftest')\n")
    assert imported_modules(module) == {"os", "huref_lab", "scripts", "tests"}
