"""The browser the page tests drive: Debian's chromium through Playwright's Python package
(Playwright's own browser download cannot work here). In CI (``CI=true``) a missing one
fails the test; elsewhere it skips."""

from __future__ import annotations

import os
import shutil

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
