"""The module boundaries: no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def private_uses(path: Path) -> list[str]:
    """``from mmzcli.x import _y`` and ``x._y`` on an imported mmzcli module, as 'file:line name'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    modules = set()  # local names bound to mmzcli modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmzcli"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{where}:{node.lineno} {node.module}.{alias.name}")
                elif node.module == "mmzcli" or alias.name[0].islower():
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmzcli"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module_boundary():
    files = [p for folder in ("mmzcli", "bench", "tests") for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 30  # the scan saw the code base
    offenders = [use for path in files for use in private_uses(path)]
    assert offenders == []


def test_the_scan_finds_a_private_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from mmzcli.cutout import _cut_task\nfrom mmzcli import bootstrap\nbootstrap._x\n")
    assert [u.split(" ")[1] for u in private_uses(probe)] == ["mmzcli.cutout._cut_task", "bootstrap._x"]
