"""The package's imports run one way: no module reaches, directly or through others, back to itself.

Every import counts, also one inside a function (a lazy import still ties the two modules together). A circle
found here names its modules, e.g. ``lifecycle -> reversals -> lifecycle``.
"""

import ast
from pathlib import Path

import django_points_earn

PACKAGE = Path(django_points_earn.__file__).resolve().parent
NAME = "django_points_earn"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports: ``from . import x`` names the submodule ``x`` when there is
    one, and the package itself only for names defined there."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(NAME)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith(NAME):
                target = node.module
            else:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in ``target`` itself
                found.add(target)
    return {m for m in found if m in modules and m != here}


def graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_import_graph_is_read():
    edges = graph()
    assert "django_points_earn.lifecycle" in edges["django_points_earn.dispatch"]  # the reader sees imports
    assert "django_points_earn.models" in edges["django_points_earn.lifecycle"]


def test_no_module_imports_its_way_back_to_itself():
    found = circles(graph())
    readable = [" -> ".join(m.removeprefix(f"{NAME}.") for m in c) for c in found]
    assert readable == []


def test_a_circle_would_be_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_sandbox_is_small_modules_sharing_no_private_names():
    """Each sandbox module stays readable (at most ~400 lines) and takes nothing private from another: what two
    platforms' sandboxes share lives in a base module, under a public name."""
    sandbox = PACKAGE / "sandbox"
    too_long = {p.name: n for p in sandbox.glob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    private = [
        f"{p.name}: {alias.name} from {node.module}"
        for p in sandbox.glob("*.py")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert too_long == {} and private == []


def test_every_module_is_small_and_platform_modules_share_no_private_names():
    """No module of the package over ~400 lines (a long one holds more than one job); the modules of a platform
    client (``providers/``) take nothing private from one another, like the sandbox's."""
    paths = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    too_long = {
        str(p.relative_to(PACKAGE)): n for p in paths if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    private = [
        f"{p.name}: {alias.name} from {node.module}"
        for p in (PACKAGE / "providers").glob("*.py")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")  # a dunder (__version__) is public
    ]
    assert too_long == {} and private == []


def test_the_adapter_module_imports_before_django_is_set_up():
    """A shop's adapter module (and the settings reference script) imports ``django_points_earn.adapters`` before
    the app registry is ready: it must not pull in the models (it did once, through the rating adapter)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import django_points_earn.adapters, django_points_earn.earning_request, django_points_earn.conf, "
        "django_points_earn.providers.points, django_points_earn.providers.fabric"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
