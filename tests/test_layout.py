"""The packages' order (docs/design.md, "Packages and their order"): no package imports one after
it, and no modules import each other in a circle. Every import counts, lazy ones included."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Each package may import those listed for it (and itself).
ALLOWED = {
    "vla": set(),
    "envs": {"vla"},
    "data": {"vla", "envs"},
    "deploy": {"vla", "envs"},
    "train": {"vla", "envs", "data", "deploy"},
}


def import_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for pkg in ALLOWED
        for p in (ROOT / pkg).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ALLOWED:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] in ALLOWED}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_package_imports_one_after_it():
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        for t in targets
        if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]]
    )
    assert not wrong, wrong


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles
