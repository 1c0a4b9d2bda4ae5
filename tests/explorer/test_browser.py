"""The explorer as a person uses it, in headless Debian chromium driven by Playwright: draw a
stroke, watch the prediction and the maps change, shift with an arrow key and see the maps
move, click a map and see its panel, step the lecture's example, open a shared link. No
console error, and no request to any host but the server. In CI (``CI=true``) a missing
browser fails these tests instead of skipping them."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import numpy as np
import pytest

from _browser import opened_page
from cnnlab import functional as F
from cnnlab.data import load_dataset
from cnnlab.explorer import Explorer, make_server
from cnnlab.lecture import LECTURE_FILTER, LECTURE_INPUT
from cnnlab.sources import LoadedModel
from cnnlab.train import default_config, train


@pytest.fixture(scope="module")
def served():
    """A briefly trained LeNet-5 with mnist5k's test set, served on a free port."""
    result = train(default_config("mnist5k", "lenet5", steps=60, progress=False))
    _, test = load_dataset("mnist5k")
    loaded = LoadedModel(result.model, "lenet5", (1, 28, 28), "mnist5k", test.x, test.y)
    server = make_server(Explorer(loaded), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _state(page):
    """The page's last forward answer: probabilities and the first conv layer's bytes."""
    return page.evaluate("""() => {
        const last = window.cnnlabExplorer.app.last;
        return {probabilities: last.probabilities, shift: last.shift,
                maps: Array.from(atob(last.layers[0].maps.data), (c) => c.charCodeAt(0)),
                updates: Number(document.body.dataset.updates)};
    }""")


def _wait_for_update(page, after: int) -> None:
    # functions, not expressions: the page's Content-Security-Policy forbids eval
    page.wait_for_function(f"() => Number(document.body.dataset.updates) > {after}",
                           timeout=20000)
    page.wait_for_function("() => !window.cnnlabExplorer.app.inFlight "
                           "&& !window.cnnlabExplorer.app.pending", timeout=20000)


def test_draw_shift_click_as_a_person_would(served):
    origin = f"{urlsplit(served.url).hostname}:{urlsplit(served.url).port}"
    with opened_page(served.url) as (page, errors, requests):
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        before = _state(page)
        # a vertical stroke down the middle of the canvas, with mouse events
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        for step in range(1, 16):
            page.mouse.move(box["x"] + box["width"] * 0.5,
                            box["y"] + box["height"] * (0.2 + 0.04 * step))
        page.mouse.up()
        _wait_for_update(page, before["updates"])
        drawn = _state(page)
        assert not np.allclose(drawn["probabilities"], before["probabilities"])
        assert drawn["maps"] != before["maps"]  # at least one feature map changed

        # an arrow key shifts the input; conv1's maps move with it (circular roll)
        page.keyboard.press("ArrowRight")
        _wait_for_update(page, drawn["updates"])
        moved = _state(page)
        assert moved["shift"] == [0, 1]
        maps = np.array(drawn["maps"], dtype=float).reshape(6, 28, 28)
        shifted = np.array(moved["maps"], dtype=float).reshape(6, 28, 28)
        assert not np.array_equal(maps, shifted)
        # the stroke sits mid-canvas, away from the borders: the maps are the rolled maps
        # (to a byte of quantisation; the per-channel ranges do not change under a roll)
        assert np.abs(np.roll(maps, 1, axis=2) - shifted).max() <= 1
        assert "shift=0%2C1" in page.evaluate("() => location.hash")

        # clicking a feature map opens its panel: filter, field, Grad-CAM, top examples
        page.locator('canvas.map[data-layer="3:conv"][data-channel="2"]').click()
        page.wait_for_selector('#detail[data-loaded="3:conv/2"]', timeout=20000)
        assert page.locator("#detail").is_visible()
        assert page.locator("#detail-filter canvas.filter").count() == 6  # conv2: 6 inputs
        assert page.locator("#detail-top figure").count() == 6
        assert "receptive field of unit" in page.inner_text("#field-caption")
        assert "layer=3%3Aconv" in page.evaluate("() => location.hash")
        page.wait_for_function("() => document.getElementById('vis-caption').textContent"
                               ".startsWith('optimised input')", timeout=30000)
        assert errors == []
        hosts = {f"{urlsplit(url).hostname}:{urlsplit(url).port}" for url in requests
                 if not url.startswith("data:")}
        assert hosts == {origin}


def test_stepper_on_the_lecture_example_gives_the_engines_numbers(served):
    expected = F.conv2d(LECTURE_INPUT[None, None].astype(np.float64),
                        LECTURE_FILTER[None, None].astype(np.float64), padding=1)[0, 0]
    with opened_page(served.url) as (page, errors, _):
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        assert page.evaluate("() => document.body.dataset.stepper") == "0"
        for _ in range(8):
            page.click("#stepper-forward")
        assert "output (1, 1) =" in page.inner_text("#stepper-sum")
        assert page.inner_text("#stepper-sum").endswith(f"= {expected[1, 1]:g}")
        page.fill("#stepper-position", "36")  # the slider to the end
        page.dispatch_event("#stepper-position", "input")
        values = page.evaluate("() => JSON.parse(document.getElementById('stepper-output')"
                               ".dataset.values)")
        np.testing.assert_array_equal(np.array(values, dtype=float), expected)
        assert errors == []


def test_a_shared_link_restores_the_view(served):
    link = served.url + "#layer=0%3Aconv&channel=4&shift=2%2C-1&mode=zeros&example=7"
    with opened_page(link) as (page, errors, _):
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        page.wait_for_selector('#detail[data-loaded="0:conv/4"]', timeout=20000)
        assert page.input_value("#shift-mode") == "zeros"
        last = page.evaluate("() => window.cnnlabExplorer.app.last")
        assert last["shift"] == [2, -1] and last["shift_mode"] == "zeros"
        assert "#7" in page.inner_text("#example-label")
        assert page.locator('canvas.map.selected[data-layer="0:conv"]'
                            '[data-channel="4"]').count() == 1
        assert errors == []


def test_a_1d_model_without_data_draws_a_signal_and_shows_its_output_map():
    from cnnlab.models import build_model

    model = build_model("wavenet", np.random.default_rng(0), (1, 64), 2)
    server = make_server(Explorer(LoadedModel(model, "wavenet", (1, 64))), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with opened_page(server.url) as (page, errors, _):
            page.wait_for_selector("body[data-ready=true]", timeout=30000)
            assert page.is_disabled("#example-random")  # no --data: no test examples
            assert page.locator("#prediction canvas.output-map").count() == 2
            before = _state(page)
            box = page.locator("#draw").bounding_box()
            page.mouse.move(box["x"] + 10, box["y"] + box["height"] * 0.8)
            page.mouse.down()
            for step in range(1, 20):  # a rising line, left to right
                page.mouse.move(box["x"] + 10 + step * (box["width"] - 20) / 19,
                                box["y"] + box["height"] * (0.8 - 0.03 * step))
            page.mouse.up()
            _wait_for_update(page, before["updates"])
            after = _state(page)
            assert after["maps"] != before["maps"]
            page.keyboard.press("ArrowLeft")
            _wait_for_update(page, after["updates"])
            assert page.evaluate("() => window.cnnlabExplorer.app.last.shift") == [-1]
            assert errors == []
    finally:
        server.shutdown()
        server.server_close()
