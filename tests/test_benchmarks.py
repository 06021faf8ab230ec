"""The research benchmarks stay apart from the product: ``python -m benchmarks`` runs from a checkout,
and nothing in se_robot imports benchmarks/ or tests/ (lazy imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_benchmarks_lists_every_benchmark():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for name in BENCHMARKS:
        assert name in out


def test_the_product_imports_neither_benchmarks_nor_tests():
    offenders = []
    for path in sorted((ROOT / "se_robot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("benchmarks", "tests")]
    assert not offenders, offenders
