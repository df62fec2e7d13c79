"""The house: every import goes down the stated order of floors (docs/ARCHITECTURE.md), no private
name crosses a module, the product never imports the test-only package, and the allocator runs
without torch."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# bottom to top; a module may import its own floor and the floors below it
FLOORS = ["core", "boards", "allocator", "frontend", "backend_tvm", "cli", "testing"]
FOLDERS = {"core": "core", "boards": "boards", "allocator": "allocator", "frontend": "frontend",
           "backend_tvm": "backend_tvm", "cli": "mpqdm", "testing": "mpqdm/testing"}
OLD_TOP_LEVEL = {"frontend", "allocator", "backend_tvm", "boards"}     # now mpqdm.<name> only


def floor_of_module(name: str) -> str | None:
    """mpqdm.core.io -> core; mpqdm.cli or mpqdm -> cli; anything outside mpqdm -> None."""
    parts = name.split(".")
    if parts[0] != "mpqdm":
        return None
    if len(parts) == 1 or parts[1] not in FOLDERS or parts[1] == "cli":
        return "cli"
    return parts[1]


def modules():
    """(floor, module name, path) of every Python file of the package."""
    for floor, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if floor == "cli" and (REPO / FOLDERS["testing"]) in path.parents:
                continue                                   # mpqdm/testing/ is a floor of its own
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            base = ["mpqdm"] if floor in ("cli", "testing") else ["mpqdm", folder]
            base += ["testing"] if floor == "testing" else []
            yield floor, ".".join(base + parts), path


def imports(module: str, path: Path):
    """(imported module, imported names, line) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names], node.lineno


ALL = list(modules())


def test_the_walk_sees_every_floor():
    assert {f for f, _, _ in ALL} == set(FLOORS)
    assert len(ALL) > 60


@pytest.mark.parametrize("floor,module,path", ALL, ids=[m for _, m, _ in ALL])
def test_imports_go_down(floor, module, path):
    names = {m for _, m, _ in ALL}
    for target, imported, line in imports(module, path):
        where = f"{path.relative_to(REPO)}:{line}"
        assert target.split(".")[0] not in OLD_TOP_LEVEL, f"{where} imports {target} outside the mpqdm namespace"
        to = floor_of_module(target)
        if to is None:
            continue
        assert FLOORS.index(to) <= FLOORS.index(floor), f"{where}: {floor} imports {target} ({to}), a floor above"
        if target in names:
            for name in imported:         # from X import _private: only inside one module's own package
                assert not name.startswith("_") or name == "__version__", f"{where} imports {target}.{name}"


def test_the_package_face_imports_nothing():
    assert not list(imports("mpqdm", REPO / "mpqdm" / "__init__.py"))


def test_allocation_imports_no_torch():
    code = ("import sys, json; import mpqdm.allocator.allocate, mpqdm.allocator.ilp, mpqdm.core.stats; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tvm', 'diffusers'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert json.loads(out.stdout) == []


def test_no_repeated_blocks_in_product_code():
    folders = [FOLDERS[f] for f in FLOORS if f != "testing"]
    r = subprocess.run([sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code", "--ignore=testing",
                        "--rcfile", str(REPO / "pyproject.toml"), *folders], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "R0801" not in r.stdout, r.stdout[-4000:]
