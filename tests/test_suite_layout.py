"""The test suite's own layout: helpers come from imgsteal_testkit, never from `conftest` or a
package named `tests` (another installed package may own that name: torch-fidelity does)."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
EXECUTORS = {"ProcessPoolCellExecutor", "RayExecutor", "make_executor", "LocalExecutor"}


def _modules():
    for path in sorted(TESTS.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_no_test_file_imports_conftest_or_a_tests_package():
    offenders = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.split(".")[0] in ("conftest", "tests"):
                    offenders.append(f"{path.relative_to(TESTS)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_conftest_files_define_fixtures_only():
    offenders = []
    for path, tree in _modules():
        if path.name != "conftest.py":
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                fixture = any("fixture" in ast.unparse(d) for d in getattr(node, "decorator_list", []))
                if not fixture:
                    offenders.append(f"{path.relative_to(TESTS)}:{node.lineno} {node.name}")
    assert not offenders, "helpers belong in imgsteal_testkit.py:\n" + "\n".join(offenders)


def test_functions_sent_to_executors_come_from_the_testkit():
    """`<executor>.run(fn, jobs)` in a test: fn must not be defined in the test module (a spawned
    worker would import it as tests.<...>); it must be imported from imgsteal_testkit."""
    offenders = []
    for path, tree in _modules():
        from_testkit = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and node.module == "imgsteal_testkit" for alias in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
                    and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
                    and node.func.value.func.id in EXECUTORS and node.args):
                fn = node.args[0]
                if not (isinstance(fn, ast.Name) and fn.id in from_testkit):
                    offenders.append(f"{path.relative_to(TESTS)}:{node.lineno} {ast.unparse(fn)}")
    assert not offenders, "\n".join(offenders)
