"""``cnnlab report``: one self-contained HTML page about a model, cnnlab's or PyTorch's.

Every picture is embedded as a data URI and the page's script is inline, so the file opens
straight from disk and no request leaves it. It holds the architecture table (shapes,
parameters, multiply-adds, receptive fields), the learning curves (for a checkpoint), the
filters, feature maps of a few test inputs, each convolution's feature visualisation beside
its top dataset examples, Grad-CAM, the equivariance audit and shift consistency; and two
small interactive parts in plain JavaScript: a convolution stepper whose sliders recompute
the output size (the engine's formula) and redraw, and a toggle between the first layer's
filters and its matrix.
"""

from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write
from .analysis import (
    equivariance_report,
    parameter_table,
    receptive_fields,
    shift_consistency,
    trace,
)
from .sources import LoadedModel
from .viz.pictures import (
    Picture,
    plot_channel,
    plot_conv_matrix,
    plot_equivariance,
    plot_feature_maps,
    plot_filters,
    plot_grad_cam,
)


def _img(picture: Picture | bytes, alt: str, element_id: str = "") -> str:
    data = picture.png if isinstance(picture, Picture) else picture
    encoded = base64.b64encode(data).decode("ascii")
    ident = f' id="{element_id}"' if element_id else ""
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _table(rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _architecture(loaded: LoadedModel) -> str:
    table = parameter_table(loaded.model, loaded.input_shape)
    fields = receptive_fields(loaded.model, loaded.input_shape)

    def show(values: Any) -> str:
        return "-" if values is None else "x".join(f"{v:g}" for v in values)

    rows = [("layer", "output shape", "parameters", "multiply-adds", "receptive field",
             "jump")]
    for p_row, f_row in zip(table.rows, fields.rows):
        rows.append((p_row.name, "x".join(str(n) for n in p_row.output_shape),
                     f"{p_row.params:,}", f"{p_row.macs:,}", show(f_row.size),
                     show(f_row.jump)))
    total = (f"<p>{table.total_params:,} parameters, {table.total_macs:,} multiply-adds "
             f"per input.</p>")
    return _table(rows) + total


def _curves(loaded: LoadedModel) -> str:
    if not loaded.history:
        return "<p>No learning curve: the model was not trained by <code>cnnlab train"\
               "</code>.</p>"
    from .viz.pictures import plot_learning_curves

    picture = plot_learning_curves({loaded.name: loaded.history}, title=loaded.data or "")
    return _img(picture.png, "learning curves")


STEPPER = """
<div id="stepper">
  <label>input <input type="range" id="s-n" min="1" max="20" value="7">
    <span id="v-n"></span></label>
  <label>kernel <input type="range" id="s-k" min="1" max="7" value="3">
    <span id="v-k"></span></label>
  <label>padding <input type="range" id="s-p" min="0" max="4" value="0">
    <span id="v-p"></span></label>
  <label>stride <input type="range" id="s-s" min="1" max="4" value="1">
    <span id="v-s"></span></label>
  <label>dilation <input type="range" id="s-d" min="1" max="4" value="1">
    <span id="v-d"></span></label>
  <p id="stepper-size"></p>
  <svg id="stepper-svg" width="760" height="90"></svg>
</div>
<script>
(function () {
  var ids = ["n", "k", "p", "s", "d"];
  function value(id) { return parseInt(document.getElementById("s-" + id).value, 10); }
  function draw() {
    var n = value("n"), k = value("k"), p = value("p"), s = value("s"), d = value("d");
    ids.forEach(function (id) {
      document.getElementById("v-" + id).textContent = " " + value(id);
    });
    var span = d * (k - 1) + 1, padded = n + 2 * p;
    var out = Math.floor((padded - span) / s) + 1;
    var text = document.getElementById("stepper-size");
    var svg = document.getElementById("stepper-svg");
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    if (out < 1) {
      text.textContent = "kernel " + k + " at dilation " + d + " spans " + span +
        " > padded input " + padded + ": no output";
      text.dataset.output = "0";
      return;
    }
    text.textContent = "output size " + out + " = floor((" + n + " + 2*" + p + " - " +
      d + "*(" + k + " - 1) - 1) / " + s + ") + 1";
    text.dataset.output = String(out);
    var cell = Math.min(30, Math.floor(740 / Math.max(padded, 1)));
    function rect(x, y, fill, stroke) {
      var r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      r.setAttribute("x", x); r.setAttribute("y", y);
      r.setAttribute("width", cell - 2); r.setAttribute("height", cell - 2);
      r.setAttribute("fill", fill); r.setAttribute("stroke", stroke);
      svg.appendChild(r);
    }
    for (var q = 0; q < padded; q++) {
      var inside = q >= p && q < p + n;
      var tap = q % d === 0 && q < span;  // the first output's footprint
      rect(10 + q * cell, 5, inside ? "#c6dbef" : "#dedede", tap ? "#2171b5" : "#888");
    }
    for (var o = 0; o < out; o++) { rect(10 + o * s * cell, 50, "#c7e9c0", "#888"); }
  }
  ids.forEach(function (id) {
    document.getElementById("s-" + id).addEventListener("input", draw);
  });
  draw();
  var toggle = document.getElementById("layer-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var layer = document.getElementById("layer-view");
      var matrix = document.getElementById("matrix-view");
      var showMatrix = matrix.style.display === "none";
      matrix.style.display = showMatrix ? "" : "none";
      layer.style.display = showMatrix ? "none" : "";
      toggle.textContent = showMatrix ? "show the layer's filters" : "show the layer's matrix";
    });
  }
})();
</script>
"""

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
section { margin-bottom: 2em; }
#stepper label { margin-right: 1em; }
"""


def build_report(loaded: LoadedModel, path: str | os.PathLike[str], *,
                 examples: int = 3, visualisation_steps: int = 96,
                 rng: np.random.Generator | None = None,
                 progress: Callable[[str], None] | None = None) -> Path:
    """Write the report about ``loaded`` (:mod:`cnnlab.sources`) to ``path``,
    atomically; the parts that need inputs use its test set (the first ``examples``)."""
    generator = rng if rng is not None else np.random.default_rng(0)
    say = progress or (lambda _: None)
    started = time.perf_counter()
    model, shape = loaded.model, loaded.input_shape
    sections: list[tuple[str, str]] = []
    say("architecture")
    sections.append(("Architecture", _architecture(loaded)))
    sections.append(("Learning curves", _curves(loaded)))
    say("filters")
    graph = trace(model, np.zeros((1, *shape), np.float32))
    convs = [n for n in graph if n.op == "conv" and n.module]
    first = convs[0] if convs else None
    if first is not None:
        layer_view = _img(plot_filters(model, shape, layer=first.module), "filters",
                          "layer-view")
        weight = dict(model.named_parameters())[first.inputs[1]]
        weight = weight.detach().cpu().numpy() if hasattr(weight, "cpu") else weight.data
        small = (shape[0], *(min(n, 8) for n in shape[1:]))
        conv = first.attrs
        matrix = plot_conv_matrix(weight, small, stride=conv["stride"],
                                  dilation=conv["dilation"], groups=conv["groups"],
                                  padding=conv["padding"])
        matrix_view = _img(matrix, "the first layer as a matrix", "matrix-view").replace(
            "<img", '<img style="display:none"', 1)
        sections.append(("Filters", '<button id="layer-toggle">show the layer\'s matrix'
                         f'</button><div>{layer_view}{matrix_view}</div>'
                         f"<p>The matrix: the first layer on a {small} input.</p>"))
    x = loaded.x_test
    if x is not None and first is not None:
        x = np.asarray(x[: max(examples, 64)], dtype=np.float32)
        say("feature maps")
        maps = "".join(_img(plot_feature_maps(model, x[i]), f"feature maps of input {i}")
                       for i in range(min(examples, len(x))))
        sections.append(("Feature maps, low to high level", maps))
        say("feature visualisation")
        channels = "".join(_img(plot_channel(model, x, layer=node.module, channel=0, k=6,
                                             steps=visualisation_steps, rng=generator),
                                f"{node.module} channel 0") for node in convs)
        sections.append(("Feature visualisation and dataset examples", channels))
        say("Grad-CAM")
        cams = "".join(_img(plot_grad_cam(model, x[i]), f"Grad-CAM of input {i}")
                       for i in range(min(examples, len(x))))
        sections.append(("Grad-CAM", cams))
        say("equivariance")
        report = equivariance_report(model, x, shifts=(1, 2, 4))
        consistency = [shift_consistency(model, x, max_shift=3, mode=mode, rng=generator)
                       for mode in ("circular", "crop")]
        text = "".join(f"<p>{html.escape(str(c))}</p>" for c in consistency)
        sections.append(("Equivariance and shift consistency",
                         _img(plot_equivariance(report), "equivariance audit") + text
                         + f"<pre>{html.escape(report.to_table())}</pre>"))
    sections.append(("Convolution stepper", STEPPER))
    took = time.perf_counter() - started
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>"
                   for title, content in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cnnlab report: "
            f"{html.escape(loaded.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>cnnlab report: {html.escape(loaded.name)}</h1>"
            f"<p>input {html.escape(str(shape))}, data {html.escape(str(loaded.data))}; "
            f"built in {took:.1f} s.</p>{body}</body></html>")
    return atomic_write(Path(path), lambda file: file.write(page.encode("utf-8")))


__all__ = ["build_report"]
