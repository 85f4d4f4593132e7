"""The package's layout: no module imports one that imports it back (directly or around a
circle, at the top or inside a function), and modules stay short."""
import ast
import re
from pathlib import Path

import jupyter_scheduler_k8s

PACKAGE = Path(jupyter_scheduler_k8s.__file__).parent
LINES_LIMIT = 400


def modules(root: Path) -> dict:
    """{dotted name: path} for every module under root (a package directory)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path, unresolved: list = None) -> dict:
    """{module: the package's modules it imports}: every import statement, wherever it is.
    Relative imports of modules that do not exist are added to `unresolved`."""
    known, graph = modules(root), {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
                # `from . import names` imports a module; `from .driver import NotFound`, a name.
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
                if node.level and base not in known and unresolved is not None:
                    unresolved.append(f"{name}: {'.' * node.level}{node.module or ''}")
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict) -> list:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_lazy_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (package / "c.py").write_text("from . import a\nimport json\n")
    (package / "d.py").write_text("from .a import thing\n\n\ndef g():\n    from .gone import y\n")
    unresolved = []
    graph = imports(package, unresolved)
    assert unresolved == ["pkg.d: .gone"]
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_module_imports_one_that_imports_it_back_and_every_import_resolves():
    unresolved = []
    graph = imports(PACKAGE, unresolved)
    assert "jupyter_scheduler_k8s.gateway.app" in graph and "jupyter_scheduler_k8s.modes" in graph
    assert cycles(graph) == []
    assert unresolved == []  # a module that moved, imported by its old place inside a function


def test_modules_are_short():
    lengths = {path.name if path.parent == PACKAGE else str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
               for path in modules(PACKAGE).values()}
    assert {name: n for name, n in lengths.items() if n > LINES_LIMIT} == {}


# What each room may import besides itself: kube/ acts on Kubernetes and knows nothing of the jobs
# it serves; jobs/ decides and is handed its driver (never the gateway's client by name); the
# gateway serves both. config.py and the package's __init__ are the floor everyone stands on.
ROOMS_MAY_IMPORT = {"kube": {"config"}, "jobs": {"config", "kube"}}


def test_rooms_import_only_what_they_stand_on():
    def room(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""
    graph = imports(PACKAGE)
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                   if room(module) in ROOMS_MAY_IMPORT and room(target) not in ROOMS_MAY_IMPORT[room(module)] | {room(module), ""})
    assert wrong == []



def test_the_scheduler_is_one_class():
    """K8sScheduler holds its parts (scheduler.definitions, scheduler.monitor) rather than mixing
    them in, so that no file calls a method of another through `self`."""
    from jupyter_scheduler_k8s.scheduler import K8sScheduler
    ours = [c.__name__ for c in K8sScheduler.__mro__ if c.__module__.startswith(PACKAGE.name)]
    assert ours == ["K8sScheduler"]


def test_the_readmes_map_names_every_module():
    """The README's map of the code names every module: those at the top, and in each room's row
    (the row whose first column is `room/`) each of the room's."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()  # the checkout's
    table = readme[readme.index("| where | what |"):]
    rows = [line.split("|")[1:3] for line in table[:table.index("\n\n")].splitlines()[2:]]
    named = {where.strip(): set(re.findall(r"`([a-z_]+\.py)`", where + what)) for where, what in rows}
    top = set().union(*named.values())
    missing = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py" and p.name not in top]
    for room in (p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        listed = named.get(f"`{room.name}/`", set())
        missing += [f"{room.name}/{p.name}" for p in room.glob("*.py") if p.name != "__init__.py" and p.name not in listed]
    assert missing == []
