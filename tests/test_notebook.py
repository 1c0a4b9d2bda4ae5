"""examples/lecture.ipynb runs from top to bottom (nbclient), so it never rots; its cells
assert the lecture's numbers themselves."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "lecture.ipynb"


def test_the_lecture_notebook_runs():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "commutes and is shift-equivariant" in text and "9760 parameters" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images  # the equivariance heat map rendered inline
