"""cnnlab lecture --quick: every claim runs and holds, the checklist prints its numbers, and
the page opens in headless chromium with every picture loaded, no console error and no
request leaving it."""

from __future__ import annotations

import pytest

from _browser import opened_page
from cnnlab.cli import main
from cnnlab.lecture import CLAIMS


@pytest.fixture(scope="module")
def lecture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lecture")
    capture = pytest.MonkeyPatch()
    import io
    import sys

    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        code = main(["lecture", "--quick", "--out", str(folder)])
    finally:
        capture.undo()
    return code, out.getvalue(), folder / "lecture.html"


def test_every_claim_holds_with_its_numbers(lecture):
    code, printed, page = lecture
    assert code == 0, printed
    assert printed.count("[x]") == len(CLAIMS) and "[ ]" not in printed
    assert f"{len(CLAIMS)} of {len(CLAIMS)} claims hold" in printed
    assert "pooled 3x3 = [[13, 10, 2], [14, 11, 3], [13, 10, 3]]" in printed
    assert "9,760 parameters, 64,660 connections" in printed
    assert page.is_file() and page.read_text().count("<section>") == len(CLAIMS)


def test_the_page_in_chromium(lecture):
    with opened_page(lecture[2]) as (page, errors, requests):
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert len(widths) >= 3 and min(widths) > 0
        assert [u for u in requests if not u.startswith(("data:", "file:"))] == []
        assert errors == []
