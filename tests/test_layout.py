"""The layout's promises: emlc's stage packages import one way (down LAYERS), with no cycle between modules or
packages; every import names a module that exists; every package ships in the wheel; and the run-folder format,
the review report, recipes, the backbone table, the source table, the console and every package face import
without torch."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emlc_cli"

# Top to bottom; a module may import from its own layer or any layer below, never above. The face
# (emlc_cli/__init__.py) and __main__ sit on top; _version, metrics and errors are the ground floor.
LAYERS = [
    ["emlc_cli", "__main__"],
    ["cli"],
    ["api", "api_checks", "demo"],
    ["pipeline"],
    ["student", "decide"],
    ["prepare", "train"],
    ["recipe"],
    ["review", "export", "models", "cache"],
    ["data"],
    ["run_folder", "runtime"],
    ["_version", "metrics", "jsonfile", "preprocessing", "errors"],
]
FLOOR = {room: floor for floor, rooms in enumerate(LAYERS) for room in rooms}
TORCH_FREE = ["emlc_cli.run_folder.layout", "emlc_cli.review", "emlc_cli.recipe.schema", "emlc_cli.models.backbones",
              "emlc_cli.data.kinds", "emlc_cli.cli.console", "emlc_cli.train.events", "emlc_cli.cache.store",
              "emlc_cli.prepare.preflight"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _packages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py"))


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, emlc module) for every emlc import in `path`: top-level, function-local and `if TYPE_CHECKING:`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emlc_cli":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((node.lineno, full if full in modules else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "emlc_cli"]
    return found


def _room(module: str) -> str:
    """The package (or top-level module) a module lives in: emlc_cli.train.meta -> train, emlc_cli -> emlc_cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for _, m in _imports(path, modules)} - {name} for name, path in modules.items()}


def _assert_acyclic(graph: dict[str, set[str]], what: str) -> None:
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph.get(name, ())):
            assert state.get(other) != 1, f"{what} cycle: {' -> '.join(trail[trail.index(other):] + [other])}"
            if other not in state:
                visit(other, trail + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_every_room_has_a_floor():
    rooms = {_room(name) for name in _modules()}
    assert rooms == set(FLOOR), f"in LAYERS but gone: {set(FLOOR) - rooms}; not in LAYERS: {rooms - set(FLOOR)}"


def test_every_import_points_down_the_layers():
    modules = _modules()
    upward = [f"{path.relative_to(ROOT)}:{line}: {name} ({_room(name)}) imports {target} ({_room(target)})"
              for name, path in modules.items() for line, target in _imports(path, modules)
              if FLOOR[_room(target)] < FLOOR[_room(name)]]
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_every_import_names_a_module_that_exists():
    """Catches imports of a module path the layout no longer has, function-local ones included."""
    import emlc_cli

    modules = _modules()
    dangling = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emlc_cli":
                known = set(emlc_cli.__all__) if node.module == "emlc_cli" else set()
                dangling += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                             if node.module not in modules
                             or node.module == "emlc_cli" and f"emlc_cli.{a.name}" not in modules and a.name not in known]
            elif isinstance(node, ast.Import):
                dangling += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                             if a.name.split(".")[0] == "emlc_cli" and a.name not in modules]
    assert not dangling, "imports of modules that do not exist:\n" + "\n".join(dangling)


def test_no_import_cycle_between_modules_or_packages():
    graph = _graph()
    _assert_acyclic(graph, "module import")
    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(_room(name), set()).update(_room(t) for t in targets if _room(t) != _room(name))
    _assert_acyclic(rooms, "package import")


def test_no_module_imports_the_package_face():
    """`from emlc_cli import __version__` inside the package would tie every stage to the face (and to api)."""
    modules = _modules()
    up = [f"{path.relative_to(ROOT)}:{line}" for name, path in modules.items() if name not in {"emlc_cli", "emlc_cli.__main__"}
          for line, target in _imports(path, modules) if target == "emlc_cli"]
    assert not up, "modules importing the package face: " + ", ".join(up)


def test_every_package_is_in_pyproject_list():
    """An editable install maps all of emlc_cli/, so a package missing from the explicit list only breaks the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    assert set(_packages()) <= listed, f"packages missing from pyproject.toml: {sorted(set(_packages()) - listed)}"


def test_a_wheel_built_from_the_checkout_holds_every_module(tmp_path):
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=False)
    if files.returncode:
        pytest.skip("not a git checkout: the wheel is built from the files git tracks")
    source = tmp_path / "src"
    for name in filter(None, files.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp_path / "out"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    expected |= {f"emlc_cli/recipes/{p.name}" for p in (ROOT / "recipes").glob("*.yaml")}
    expected |= {f"emlc_cli/assets/{p.name}" for p in (PACKAGE / "assets").iterdir()} | {"emlc_cli/py.typed"}
    assert expected <= shipped, f"missing from the wheel: {sorted(expected - shipped)}"


def test_package_faces_and_the_torch_free_modules_import_without_torch():
    names = [*_packages(), *TORCH_FREE]
    code = f"import sys, importlib; [importlib.import_module(m) for m in {names!r}]; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_stage_package_faces_are_docstring_only():
    """So that importing one module of a stage (console imports train.events) loads nothing else of it.
    `review` keeps its torch-free face: it is `emlc review`'s API."""
    heavy = []
    for package in _packages():
        if package in {"emlc_cli", "emlc_cli.review"}:
            continue
        body = ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text(encoding="utf-8")).body
        if any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body):
            heavy.append(package)
    assert not heavy, f"package faces with code: {heavy}"


def test_the_public_api_is_importable_from_the_top():
    code = ("import sys, emlc_cli; assert 'torch' not in sys.modules; "
            "from emlc_cli import EmlcError, DataError, RecipeError, OutputError, __version__; "
            "assert emlc_cli.StepReport.__module__ == 'emlc_cli.train.events' and callable(emlc_cli.load_recipe); "
            "from emlc_cli import clean, evaluate, predict, load_run, Run, Predictions, EpochReport, FoldReport, Recipe; "
            "assert all(hasattr(emlc_cli, n) for n in emlc_cli.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_the_recipe_names_every_decision_rule():
    """recipe.schema owns correct.rule's choices (so the recipe needs nothing from decide/); each has its rule."""
    from emlc_cli.decide.rules import RULES
    from emlc_cli.recipe.schema import RULE_NAMES

    assert tuple(RULES) == RULE_NAMES
