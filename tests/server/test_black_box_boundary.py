"""The black-box boundary is a property of the code: nothing under imgsteal.attack imports imgsteal.victim."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import imgsteal.attack

ATTACK_DIR = Path(imgsteal.attack.__file__).parent


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module an attack file imports, anywhere in it (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_attack_source_file_imports_the_victim():
    files = sorted(ATTACK_DIR.rglob("*.py"))
    assert any(f.name == "http_oracle.py" for f in files)
    for path in files:
        package = "imgsteal." + ".".join(path.relative_to(ATTACK_DIR.parent).with_suffix("").parts[:-1])
        bad = sorted(m for m in imported_modules(path, package) if m == "imgsteal.victim" or m.startswith("imgsteal.victim."))
        assert not bad, f"{path} imports {bad}"


@pytest.mark.slow  # over 10 s on the busy 2-core box (subprocesses / served model / reference features)
def test_importing_every_attack_module_loads_nothing_of_the_victim():
    code = """
import importlib, json, pkgutil, sys
import imgsteal.attack as attack
names = [m.name for m in pkgutil.walk_packages(attack.__path__, "imgsteal.attack.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "victim": sorted(m for m in sys.modules if m.startswith("imgsteal.victim"))}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "imgsteal.attack.http_oracle" in found["imported"] and "imgsteal.attack.harvest" in found["imported"]
    assert found["victim"] == []


def test_the_checker_sees_a_lazy_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ..victim import inference\n    import imgsteal.victim.oracle\n")
    found = imported_modules(sample, "imgsteal.attack")
    assert "imgsteal.victim.inference" in found and "imgsteal.victim.oracle" in found
