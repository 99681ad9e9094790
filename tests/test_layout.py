"""The layout's promises: no import cycle between emlc's modules, and the run-folder format, the review report,
recipes and the source table readable without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "emlc_cli"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """emlc modules `path` imports anywhere (function-local imports too), except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emlc_cli"):
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("emlc_cli")}
    return {name for name in names if name in modules}


def test_no_import_cycle():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        own = name + "." if path.name == "__init__.py" else None  # a package importing its own parts is no cycle
        graph[name] = {m for m in _imports(path, modules) if m != name and not (own and m.startswith(own))}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            assert state.get(other) != 1, f"import cycle: {' -> '.join(trail[trail.index(other):] + [other])}"
            if other not in state:
                visit(other, trail + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_run_folder_review_recipes_and_sources_need_no_torch():
    code = ("import sys; import emlc_cli.run_folder, emlc_cli.review, emlc_cli.recipe, emlc_cli.backbones, "
            "emlc_cli.data.kinds, emlc_cli.console; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
