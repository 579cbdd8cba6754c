"""The layout keeps its promises: imports form no cycle and point only down the stages, and validating a config
needs neither torch nor Optuna."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pdsearch"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at run time (function-level imports too; TYPE_CHECKING not)."""
    top = root.name
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def target(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()

        def visit(node: ast.AST) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node):
                for child in node.orelse:
                    visit(child)
                return
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                names = []
            for name in names:
                if name.split(".")[0] == top and (found := target(name)) and found != module:
                    edges.add(found)
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(ast.parse(path.read_text()))
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return []


def test_pdsearch_imports_form_no_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and graph["pdsearch.searching.driver"]  # the graph is really read
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_introduced_on_purpose_is_found_and_named(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    import pkg.c\n")  # a function-level import counts
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.sub.b\n"
                              "from pkg import a\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    assert find_cycle(import_graph(pkg)) == []  # annotations only: no cycle at run time


# The stages, lowest first: a module imports its own stage or a lower one, never a higher one. The run directory's
# format sits below the search that writes it and the reports that read it; the search, which orchestrates, is top.
STAGES = [
    {"errors", "registry", "ranges", "files"},
    {"catalog"},  # the light name tables of what later stages build
    {"data", "models", "policy"},
    {"config"},
    {"space", "pruning"},
    {"cost"},
    {"planning"},
    {"trial"},
    {"run"},
    {"reporting"},
    {"searching"},
    {"cli", "__main__", "reference", ""},  # "" is pdsearch/__init__.py, whose lazy names reach every verb; reference: the docs
]


def stage_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(STAGES) if part in names)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if stage_of(t) > stage_of(m))


def test_pdsearch_imports_point_only_down_the_stages():
    graph = import_graph(PACKAGE)
    assert {m.split(".")[1] for m in graph if "." in m} <= set().union(*STAGES)  # every package has its stage
    assert upward_imports(graph) == []


def test_an_upward_import_introduced_on_purpose_is_found_and_named(tmp_path):
    import shutil

    copy = tmp_path / "pdsearch"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "config.py"
    config.write_text(config.read_text() + "\n\ndef _late():\n    from pdsearch.searching.driver import search\n")
    assert upward_imports(import_graph(copy)) == ["pdsearch.config -> pdsearch.searching.driver"]


def test_validating_a_config_imports_neither_torch_nor_optuna():
    code = ("import sys; from pdsearch.config import load_config\n"
            "for path in ('search_spaces/quickstart.yaml', 'search_spaces/quickstart_allocators.yaml'):\n"
            "    load_config(path)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'optuna', 'ray', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
