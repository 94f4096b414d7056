"""The house rules of the code: every module imports alone, no import cycles, one public framework API."""

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import components

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "router")


def project_modules():
    """Every module of the project's packages, as {dotted name: path}."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if parts[-1] != "__main__":
                modules[name] = path
    return modules


def imported_modules(path, modules):
    """The project modules that path imports anywhere in it (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def test_no_module_imports_itself_back_through_others():
    modules = project_modules()
    graph = {name: imported_modules(path, modules) - {name} for name, path in modules.items()}
    cycles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for imported in sorted(graph[name]):
            if state.get(imported) == "open":
                cycles.append(" -> ".join(trail[trail.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported, trail + [imported])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_imports_alone_in_a_fresh_interpreter():
    def import_alone(name):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        return name, done.returncode, done.stderr.strip().splitlines()[-1:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f"{name}: {last}" for name, code, last in pool.map(import_alone, sorted(project_modules())) if code]
    assert not failures, "modules that fail to import alone:\n" + "\n".join(failures)


def test_the_public_api_is_the_framework_and_its_errors():
    assert set(components.__all__) >= {"on", "procedure", "every", "on_join", "Mesh", "NerveError", "InvalidArgument"}
    for name in components.__all__:
        assert getattr(components, name) is not None
    from components import Mesh, NerveError, on

    assert Mesh.__module__ == "components.mesh.session" and issubclass(components.InvalidArgument, NerveError)
    assert callable(on)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        components.nothing


def test_importing_the_framework_loads_no_wamp_library():
    # A tracker trims Autobahn's optional modules before Autobahn loads; `import components` must not load it first.
    code = "import sys, components; print(sorted(m for m in sys.modules if m.split('.')[0] in ('autobahn', 'twisted')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_the_rooms_in_the_architecture_doc_name_every_module_and_no_other():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    rooms = doc.split("## Rooms", 1)[1].split("```")[1]
    named = set(re.findall(r"([a-z_]+\.py)\b", rooms))
    present = {path.name for folder in (*PACKAGES, "examples") for path in (ROOT / folder).rglob("*.py")}
    assert not present - named - {"__init__.py"}, f"modules docs/architecture.md's Rooms do not name: {present - named}"
    assert not named - present, f"Rooms name modules that do not exist: {named - present}"


def test_the_dashboard_preloads_every_module_app_js_imports():
    # The router serves the page's files between its WAMP work: a module found only when its importer runs costs a
    # round of requests on a busy router, which a user sees as a slower page open.
    web = ROOT / "web"
    static_import = re.compile(r'\bfrom "\./([\w-]+\.js)";')
    graph, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        for imported in static_import.findall((web / "js" / name).read_text()):
            if imported not in graph:
                graph.add(imported)
                todo.append(imported)
    preloaded = set(re.findall(r'<link rel="modulepreload" href="js/([\w-]+\.js)">', (web / "index.html").read_text()))
    assert graph - preloaded == set(), "add these to web/index.html's modulepreload links"
    assert preloaded - graph == set(), "app.js no longer imports these"
