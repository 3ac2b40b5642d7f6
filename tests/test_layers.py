"""Imports run one way only, and no import circle exists: read from the source, with the
imports made only for type checking counted too (a circle of those is still a circle).

A layer may import the layers below it; the packages of one layer are independent of each
other. A new top-level module or package must be placed here.

Around the package: tests/ and bench/ both stand on testkit/ (the fakes, the private servers,
the fault harness); tests never import bench (except tests/bench/, which runs the benchmark
scripts themselves), bench never imports tests, testkit imports neither, and smsgw none of
the three.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import smsgw

ROOT = Path(smsgw.__file__).parent
REPO = ROOT.parent

LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"app", "supervise", "workers"},  # wire concrete backends together; run processes
    {"api"},
    {"app_keys"},  # what the app factory stores, read by the handlers
    {"otp", "dispatch"},
    {"queue", "limiter", "providers", "audit", "replicas", "scaling"},
    {"redis_connect"},  # one server or the primary Sentinel names, and its failovers
    # Shared helpers, written once.
    {
        "_aio",
        "heap",  # the garbage collector tuned once the server has started
        "counters",
        "log",
        "metric_children",  # prometheus children looked up once, for the hot paths
        "phone",
        "processes",
        "redis_keys",
        "redis_scripts",
        "retry",
        "segments",
        "transport",  # our HTTP client for providers: imports only errors
    },
    {"settings"},
    {"validation"},  # reads msgspec's errors for the settings loader and the API
    {"errors"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("smsgw", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    yield from _imported(package, path)


def _imported(package: str, path: Path) -> Iterator[str]:
    """Every module name `path` imports (a `from a import b` yields a.b if that is a module,
    else a); relative imports resolved against `package`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from smsgw.api import keys` imports the module smsgw.api.keys.
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {
        name: {d for d in _imports(name, path) if d in MODULES and d != name}
        for name, path in MODULES.items()
    }


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_top_level_part_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    tops = {_top(name) for name in MODULES} - {""}
    assert tops <= placed, f"place these in LAYERS: {sorted(tops - placed)}"


def test_imports_run_down_the_layers() -> None:
    layer = {part: index for index, parts in enumerate(LAYERS) for part in parts}
    wrong = [
        f"{name} imports {dep}"
        for name, deps in _graph().items()
        for dep in deps
        if _top(name) and _top(dep) and _top(name) != _top(dep)
        if layer[_top(dep)] <= layer[_top(name)]
    ]
    assert wrong == []


def test_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


def _tops_imported(folder: str) -> dict[str, set[str]]:
    """Top-level names imported by each .py file under REPO/folder, by repo-relative path."""
    found = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        relative = path.relative_to(REPO)
        package = ".".join(relative.parent.parts)
        found[str(relative)] = {name.partition(".")[0] for name in _imported(package, path)}
    return found


# What each tree around the package must never import.
FORBIDDEN = {
    "smsgw": {"tests", "bench", "testkit"},
    "testkit": {"tests", "bench"},
    "bench": {"tests"},
    "tests": {"bench"},
}
# tests/bench/ runs the benchmark scripts themselves: the one place tests import bench.
ALLOWED = {"tests/bench": {"bench"}}


def test_tests_bench_and_testkit_import_one_way() -> None:
    wrong = []
    for folder, forbidden in FORBIDDEN.items():
        for path, tops in _tops_imported(folder).items():
            allowed = {
                top for prefix, ok in ALLOWED.items() if path.startswith(prefix + "/") for top in ok
            }
            wrong += [f"{path} imports {top}" for top in sorted(tops & (forbidden - allowed))]
    assert wrong == []
