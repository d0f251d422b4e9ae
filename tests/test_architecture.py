"""The layout stays easy to see: no import cycles between imgsteal's modules at import time, and each
shared helper has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import imgsteal

ROOT = Path(imgsteal.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """imgsteal modules `path` imports when it is imported (module level, not under TYPE_CHECKING; lazy
    imports inside functions are how a layer may call upward without a cycle)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) else []:
            names = []
            if isinstance(sub, ast.Import):
                names = [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                names = [sub.module] + [f"{sub.module}.{a.name}" for a in sub.names]
            found.update(n for n in names if n in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: top_level_imports(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert len(graph) > 50 and "imgsteal.pipeline.stages" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_shared_helpers_have_one_home():
    """Atomic writes and owner-only files live in imgsteal.files; GAN losses in imgsteal.train.gan."""
    for path in ROOT.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "files.py":
            assert "os.O_EXCL" not in text, f"{path}: create owner-only files with imgsteal.files"
        if path.name != "gan.py":
            for copy in ("full_like(logits, float(real)", "ones_like(real_logits)", "ones_like(gen_logits)"):
                assert copy not in text, f"{path}: a GAN loss written again; use imgsteal.train.gan.gan_loss"


def test_oracles_are_opened_one_way():
    """Clients of a victim (HTTP, API spec) are built only by pipeline.open_oracle (and the attack layer
    that defines them), so time-outs, keys and defences are handled in one place."""
    homes = {ROOT / "pipeline" / "oracle.py", ROOT / "attack" / "http_oracle.py", ROOT / "attack" / "api_spec.py"}
    for path in ROOT.rglob("*.py"):
        if path in homes:
            continue
        text = path.read_text(encoding="utf-8")
        for client in ("HttpOracle(", "SpecOracle("):
            assert client not in text, f"{path}: open a victim with imgsteal.pipeline.oracle.open_oracle"
