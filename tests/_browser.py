"""The browser the page tests drive: Debian's chromium through Playwright's Python package
(Playwright's own browser download cannot work here). In CI (``CI=true``) a missing one
fails the test; elsewhere it skips."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def browser_or_skip():
    """(sync_playwright, the chromium executable), or skip / fail."""
    executable = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the browser tests need Debian's chromium and playwright in CI")
        pytest.skip("chromium or playwright is not installed")
    return sync_playwright, executable


@contextmanager
def opened_page(path: Path | str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """``path`` (a file, or a URL as a string) opened in headless chromium: (the page, the
    console errors, the URLs it requested), after it has loaded."""
    sync_playwright, executable = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path if isinstance(path, str) else path.as_uri())
        page.wait_for_load_state("load")
        try:
            yield page, errors, requests
        finally:
            browser.close()
