"""The README's table of op families ("Where things are") points at files and functions that
exist: every ``path`` or ``path: name, name`` in it names a file of the repository and
top-level definitions of that file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnlab"


def _table_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")
            and not line.startswith("| op family")]


def _path(reference: str) -> Path:
    return ROOT / reference if reference.startswith("tests/") else PACKAGE / reference


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_the_table_has_a_row_per_op_family_with_five_columns():
    rows = _table_rows()
    assert len(rows) >= 12
    families = [row.split("|")[1].strip() for row in rows]
    assert "convolution" in families and "max pooling" in families
    for row in rows:
        assert row.count("|") == 6, row


def test_every_path_and_name_in_the_table_exists():
    checked_files = checked_names = 0
    for row in _table_rows():
        for reference in re.findall(r"`([^`]+\.py(?::[^`]*)?)`", row):
            file_part, _, names = reference.partition(":")
            path = _path(file_part.strip())
            assert path.is_file(), f"README table: {file_part} does not exist"
            checked_files += 1
            defined = _top_level_names(path)
            for name in filter(None, (n.strip() for n in names.split(","))):
                assert name in defined, f"README table: {file_part} has no {name}"
                checked_names += 1
    assert checked_files >= 40 and checked_names >= 60, (checked_files, checked_names)


def test_conv2d_forward_its_vjp_and_its_tests_are_three_files_from_the_table():
    """Issue 12's newcomer test: from the table's convolution row, conv2d's public function,
    its GEMM forward and VJP, and its tests."""
    row = next(r for r in _table_rows() if r.split("|")[1].strip() == "convolution")
    assert "`functional/convolution.py: conv, conv1d, conv2d, conv3d`" in row
    assert "`ops/gemm.py: conv_forward`" in row and "`ops/gemm.py: conv_backward`" in row
    assert "`tests/ops/test_gemm.py`" in row


def test_the_looking_inside_example_runs_and_says_what_the_text_says(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Looking inside a model", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "total: 61,706 parameters, 416,520 MACs per sample" in printed
    assert "4:max_pool  (16, 5, 5)    16x16  4x4" in printed
    assert "boundary circular" in printed and "shift consistency" in printed
