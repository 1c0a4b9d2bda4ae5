// cnnlab explorer: one page of plain JavaScript, SVG and canvas. It talks to the server's
// JSON API only (documented in cnnlab's README, "cnnlab serve"); nothing else is loaded.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_CHANNELS = 32;          // feature maps drawn per layer
  const state = {                   // what the address bar holds (shareable)
    layer: null, channel: 0, unit: null, shift: null, mode: "circular", pool: "model",
    example: null,
  };
  const app = {
    info: null, rank: 2, size: [], channels: 1, ink: null, lecture: null,
    inFlight: false, pending: false, updates: 0, last: null, detail: null,
  };
  window.cnnlabExplorer = { state: state, app: app };  // for the tests and the curious

  // ---- the API -------------------------------------------------------------------------
  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    const answer = await response.json();
    if (!response.ok) { throw new Error(answer.error || response.statusText); }
    return answer;
  }

  // The maps' encoding: per channel min/max and bytes (see cnnlab.explorer.encode_maps).
  function decode(encoded) {
    const raw = atob(encoded.data);
    const shape = encoded.shape;
    const channels = shape.length > 1 ? shape[0] : 1;
    const per = shape.reduce((a, b) => a * b, 1) / channels;
    const values = new Float64Array(channels * per);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    if (encoded.encoding === "float32") {
      const floats = new Float32Array(bytes.buffer);
      for (let i = 0; i < floats.length; i++) { values[i] = floats[i]; }
    } else {
      for (let c = 0; c < channels; c++) {
        const lo = encoded.min[c], span = encoded.max[c] - encoded.min[c];
        for (let i = 0; i < per; i++) { values[c * per + i] = lo + bytes[c * per + i] / 255 * span; }
      }
    }
    return { values: values, bytes: bytes, shape: shape, channels: channels, per: per };
  }

  // ---- colours -------------------------------------------------------------------------
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function viridis(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    return VIRIDIS[i].map((a, k) => Math.round(a + f * (VIRIDIS[i + 1][k] - a)));
  }
  function diverging(t) {  // t in [-1, 1]: blue, white, red
    const a = Math.min(1, Math.abs(t));
    return t < 0 ? [Math.round(255 * (1 - a)), Math.round(255 * (1 - a)), 255]
                 : [255, Math.round(255 * (1 - a)), Math.round(255 * (1 - a))];
  }
  function gray(t) { const v = Math.round(255 * Math.min(1, Math.max(0, t))); return [v, v, v]; }

  // Draw a (rows x cols) grid of values in [0, 1] (or [-1, 1] for diverging) on a canvas.
  function paint(canvas, rows, cols, valueAt, colour) {
    const image = new ImageData(cols, rows);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const rgb = colour(valueAt(r, c)), k = 4 * (r * cols + c);
        image.data[k] = rgb[0]; image.data[k + 1] = rgb[1]; image.data[k + 2] = rgb[2];
        image.data[k + 3] = 255;
      }
    }
    const scratch = document.createElement("canvas");
    scratch.width = cols; scratch.height = rows;
    scratch.getContext("2d").putImageData(image, 0, 0);
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.drawImage(scratch, 0, 0, canvas.width, canvas.height);
  }

  // An input (C, *spatial) as values in [0, 1] of the drawing range, averaged over channels.
  function inputGrid(values, shape) {
    const lo = app.info.value_range[0], span = (app.info.value_range[1] - lo) || 1;
    const per = values.length / shape[0];
    const mean = new Float64Array(per);
    for (let c = 0; c < shape[0]; c++) {
      for (let i = 0; i < per; i++) { mean[i] += (values[c * per + i] - lo) / span / shape[0]; }
    }
    return mean;
  }

  function drawInput(canvas, grid, overlay) {
    const context = canvas.getContext("2d");
    if (app.rank === 2) {
      const [h, w] = app.size;
      paint(canvas, h, w, (r, c) => grid[r * w + c], gray);
    } else {
      const n = app.size[0];
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.strokeStyle = "#222";
      context.lineWidth = 2;
      context.beginPath();
      for (let i = 0; i < n; i++) {
        const x = (i + 0.5) / n * canvas.width, y = (1 - grid[i]) * canvas.height;
        if (i === 0) { context.moveTo(x, y); } else { context.lineTo(x, y); }
      }
      context.stroke();
    }
    if (overlay) { overlay(context); }
  }

  // ---- drawing -------------------------------------------------------------------------
  function blankInk() { return new Float64Array(app.size.reduce((a, b) => a * b, 1)); }

  // The drawing (values in [0, 1]) as the model's input: the test inputs' value range, the
  // same picture in every channel.
  function inkToInput() {
    const lo = app.info.value_range[0], span = app.info.value_range[1] - lo;
    const out = [];
    for (let c = 0; c < app.channels; c++) {
      if (app.rank === 1) {
        out.push(Array.from(app.ink, (t) => lo + t * span));
      } else {
        const [h, w] = app.size, plane = [];
        for (let r = 0; r < h; r++) {
          plane.push(Array.from(app.ink.subarray(r * w, (r + 1) * w), (t) => lo + t * span));
        }
        out.push(plane);
      }
    }
    return out;
  }

  function setupDrawing() {
    const canvas = $("draw");
    if (app.rank === 1) { canvas.width = 280; canvas.height = 160; $("seen").height = 70; }
    let down = false, previous = null;
    function at(event) {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height];
    }
    function stroke2d(x, y) {
      const [h, w] = app.size, radius = Math.max(1.0, w / 22);
      const cx = x * w - 0.5, cy = y * h - 0.5;
      for (let r = Math.floor(cy - radius - 1); r <= cy + radius + 1; r++) {
        for (let c = Math.floor(cx - radius - 1); c <= cx + radius + 1; c++) {
          if (r < 0 || c < 0 || r >= h || c >= w) { continue; }
          const d = Math.hypot(r - cy, c - cx), t = Math.max(0, Math.min(1, radius + 0.5 - d));
          app.ink[r * w + c] = Math.max(app.ink[r * w + c], t);
        }
      }
    }
    function stroke1d(x, y, from) {
      const n = app.size[0], i = Math.max(0, Math.min(n - 1, Math.floor(x * n)));
      const value = Math.max(0, Math.min(1, 1 - y));
      const j = from ? Math.max(0, Math.min(n - 1, Math.floor(from[0] * n))) : i;
      const v0 = from ? Math.max(0, Math.min(1, 1 - from[1])) : value;
      const steps = Math.abs(i - j);
      for (let s = 0; s <= steps; s++) {
        const k = j + Math.sign(i - j) * s;
        app.ink[k] = steps ? v0 + (value - v0) * s / steps : value;
      }
    }
    function move(event) {
      if (!down) { return; }
      const [x, y] = at(event);
      if (app.rank === 2) {
        const [px, py] = previous || [x, y];
        const n = Math.max(1, Math.ceil(Math.hypot(x - px, y - py) * app.size[1] * 2));
        for (let s = 1; s <= n; s++) { stroke2d(px + (x - px) * s / n, py + (y - py) * s / n); }
      } else {
        stroke1d(x, y, previous);
      }
      previous = [x, y];
      state.example = null;
      $("example-label").textContent = "(drawn)";
      drawInput(canvas, app.ink);
      refresh();
    }
    canvas.addEventListener("pointerdown", (event) => {
      down = true; previous = null; canvas.setPointerCapture(event.pointerId); move(event);
    });
    canvas.addEventListener("pointermove", move);
    canvas.addEventListener("pointerup", () => { down = false; previous = null; writeHash(); });
  }

  // ---- the forward pass and the layers --------------------------------------------------
  function request() {
    return { input: inkToInput(), shift: state.shift, shift_mode: state.mode, pool: state.pool };
  }

  // Send the newest input; while one request is out, keep only the latest change.
  async function refresh() {
    if (app.inFlight) { app.pending = true; return; }
    app.inFlight = true;
    try {
      const started = performance.now();
      const answer = await api("/api/forward", request());
      app.last = answer;
      render(answer, performance.now() - started);
    } catch (error) {
      $("timing").textContent = "error: " + error.message;
    } finally {
      app.inFlight = false;
      if (app.pending) { app.pending = false; refresh(); }
    }
  }

  function render(answer, roundTrip) {
    const seen = decode(answer.input);
    drawInput($("seen"), inputGrid(seen.values, seen.shape));
    renderPrediction(answer);
    renderLayers(answer.layers);
    $("timing").textContent = `round trip ${roundTrip.toFixed(0)} ms (model ${answer.milliseconds} ms)`;
    app.updates += 1;
    document.body.dataset.updates = String(app.updates);
  }

  function renderPrediction(answer) {
    const box = $("prediction");
    box.textContent = "";
    if (!answer.probabilities) {  // a U-Net's or WaveNet's output map, channel by channel
      const last = answer.layers[answer.layers.length - 1], maps = decode(last.maps);
      const shape = last.output_shape, spatial = shape.length === app.rank + 1;
      const rows = spatial && app.rank === 2 ? shape[1] : 1;
      const cols = spatial ? shape[shape.length - 1] : maps.per * maps.channels;
      const count = spatial ? Math.min(shape[0], 8) : 1;
      for (let c = 0; c < count; c++) {
        const canvas = document.createElement("canvas");
        canvas.className = "output-map";
        canvas.width = Math.min(280, cols * 4); canvas.height = rows === 1 ? 20 : canvas.width * rows / cols;
        paint(canvas, rows, cols, (r, k) => maps.bytes[c * maps.per + r * cols + k] / 255, viridis);
        box.append(canvas);
      }
      return;
    }
    answer.probabilities.forEach((p, k) => {
      const row = document.createElement("div");
      row.className = "bar" + (k === answer.prediction ? " top" : "");
      const label = document.createElement("span");
      label.textContent = app.info.classes[k];
      const bar = document.createElement("span");
      bar.className = "fill";
      bar.style.width = (100 * p).toFixed(1) + "%";
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = (100 * p).toFixed(1) + "%";
      row.append(label, bar, value);
      box.append(row);
    });
  }

  function mapScale(rows, cols) { return Math.max(2, Math.floor(84 / Math.max(rows, cols))); }

  function renderLayers(layers) {
    const box = $("layers");
    box.textContent = "";
    layers.forEach((layer) => {
      const maps = decode(layer.maps);
      const row = document.createElement("div");
      row.className = "layer";
      row.dataset.layer = layer.name;
      const head = document.createElement("div");
      head.className = "layer-head";
      const error = layer.equivariance_error === null ? `– (${layer.equivariance_note})`
        : layer.equivariance_error.toExponential(2);
      head.textContent = `${layer.name} · ${layer.kind} · ${layer.output_shape.join("×")} · ` +
        `equivariance error ${error}`;
      row.append(head);
      const strip = document.createElement("div");
      strip.className = "maps";
      const shape = layer.output_shape;
      const spatial = shape.length === app.rank + 1;
      const count = spatial ? Math.min(shape[0], MAX_CHANNELS) : 1;
      for (let c = 0; c < count; c++) {
        const canvas = document.createElement("canvas");
        canvas.className = "map";
        canvas.dataset.layer = layer.name;
        canvas.dataset.channel = String(c);
        canvas.title = `${layer.name}, channel ${c}`;
        let rows, cols;
        if (!spatial) { rows = 1; cols = maps.per * maps.channels; }
        else if (app.rank === 2) { rows = shape[1]; cols = shape[2]; }
        else { rows = 1; cols = shape[1]; }
        const scale = spatial ? mapScale(rows, cols) : Math.max(1, Math.floor(600 / cols));
        canvas.width = cols * scale; canvas.height = app.rank === 1 || !spatial ? 14 : rows * scale;
        const offset = spatial ? c * maps.per : 0;
        paint(canvas, rows, cols, (r, k) => maps.bytes[offset + r * cols + k] / 255, viridis);
        if (state.layer === layer.name && state.channel === c) { canvas.classList.add("selected"); }
        canvas.addEventListener("click", (event) => {
          const box2 = canvas.getBoundingClientRect();
          const u = [Math.floor((event.clientY - box2.top) / box2.height * rows),
                     Math.floor((event.clientX - box2.left) / box2.width * cols)];
          select(layer.name, c, spatial ? (app.rank === 2 ? u : [u[1]]) : null);
        });
        strip.append(canvas);
      }
      if (spatial && shape[0] > MAX_CHANNELS) {
        const more = document.createElement("span");
        more.className = "note";
        more.textContent = ` +${shape[0] - MAX_CHANNELS} more channels`;
        strip.append(more);
      }
      row.append(strip);
      box.append(row);
    });
    if (state.layer && !layers.some((l) => l.name === state.layer)) { closeDetail(); }
  }

  // ---- one feature map, looked at -------------------------------------------------------
  async function select(layer, channel, unit) {
    state.layer = layer; state.channel = channel; state.unit = unit;
    writeHash();
    document.querySelectorAll("canvas.map.selected").forEach((c) => c.classList.remove("selected"));
    document.querySelectorAll(`canvas.map[data-channel="${channel}"]`).forEach((c) => {
      if (c.dataset.layer === layer) { c.classList.add("selected"); }
    });
    const panel = $("detail");
    panel.hidden = false;
    $("detail-title").textContent = `${layer}, channel ${channel}`;
    let answer;
    try {
      answer = await api("/api/inspect", Object.assign(request(), { layer: layer, channel: channel, unit: unit }));
    } catch (error) {
      $("detail-title").textContent = `${layer}, channel ${channel}: ${error.message}`;
      return;
    }
    app.detail = answer;
    renderFilter(answer.filter);
    const seen = decode(app.last.input);
    const grid = inputGrid(seen.values, seen.shape);
    drawInput($("detail-field"), grid, (context) => drawField(context, answer.receptive_field));
    $("field-caption").textContent = answer.unit === null ? "receptive field: no spatial axes"
      : `receptive field of unit (${answer.unit.join(", ")})`;
    if (answer.grad_cam) {
      const cam = decode(answer.grad_cam.map);
      drawInput($("detail-cam"), grid, (context) => drawHeat(context, cam));
      $("cam-caption").textContent = `Grad-CAM at ${answer.grad_cam.layer}, class ${app.info.classes[answer.grad_cam.target]}`;
    } else {
      $("detail-cam").getContext("2d").clearRect(0, 0, 168, 168);
      $("cam-caption").textContent = "Grad-CAM: needs a classifier and a layer with spatial maps";
    }
    renderTop(answer.top_examples);
    panel.dataset.loaded = layer + "/" + channel;
    visualise(layer, channel);
  }

  async function visualise(layer, channel) {
    const canvas = $("detail-vis");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    const info = layerInfo(layer);
    if (!info || info.output_shape.length !== app.rank + 1) {
      $("vis-caption").textContent = "feature visualisation: needs spatial maps";
      return;
    }
    $("vis-caption").textContent = "feature visualisation: optimising…";
    try {
      const answer = await api("/api/visualise", { layer: layer, channel: channel, pool: state.pool });
      if (state.layer !== layer || state.channel !== channel) { return; }
      const image = decode(answer.image);
      drawInput(canvas, inputGrid(image.values, image.shape));
      $("vis-caption").textContent = `optimised input: activation ${answer.activation.toFixed(3)} (random start ${answer.baseline.toFixed(3)})`;
    } catch (error) {
      $("vis-caption").textContent = "feature visualisation: " + error.message;
    }
  }

  function layerInfo(name) {
    const layers = state.pool === "blur" && app.info.blur_layers ? app.info.blur_layers : app.info.layers;
    return layers.find((l) => l.name === name);
  }

  function renderFilter(filter) {
    const box = $("detail-filter");
    box.textContent = "";
    if (!filter) { box.textContent = "no convolution filter behind this map"; return; }
    const weights = decode(filter.weights);
    let limit = 0;
    weights.values.forEach((v) => { limit = Math.max(limit, Math.abs(v)); });
    const shape = weights.shape, inputs = Math.min(shape[0], 16);
    const rows = shape.length === 3 ? shape[1] : 1, cols = shape[shape.length - 1];
    const caption = document.createElement("div");
    caption.className = "note";
    caption.textContent = `${filter.layer}: ${shape.join("×")}` + (shape[0] > 16 ? " (first 16 input channels)" : "");
    box.append(caption);
    for (let c = 0; c < inputs; c++) {
      const canvas = document.createElement("canvas");
      canvas.className = "filter";
      canvas.width = cols * 12; canvas.height = rows * 12;
      paint(canvas, rows, cols, (r, k) => weights.values[c * rows * cols + r * cols + k] / (limit || 1), diverging);
      box.append(canvas);
    }
  }

  function drawField(context, field) {
    if (!field) { return; }
    const canvas = context.canvas;
    context.strokeStyle = "#ff7f0e";
    context.lineWidth = 2;
    if (app.rank === 2) {
      const [h, w] = app.size, sy = canvas.height / h, sx = canvas.width / w;
      const [[r0, r1], [c0, c1]] = field;
      context.strokeRect(c0 * sx, r0 * sy, (c1 - c0 + 1) * sx, (r1 - r0 + 1) * sy);
    } else {
      const n = app.size[0], sx = canvas.width / n, [lo, hi] = field[0];
      context.fillStyle = "rgba(255, 127, 14, 0.3)";
      context.fillRect(lo * sx, 0, (hi - lo + 1) * sx, canvas.height);
    }
  }

  function drawHeat(context, cam) {
    const canvas = context.canvas, cells = cam.per;
    const rows = app.rank === 2 ? app.size[0] : 1, cols = app.rank === 2 ? app.size[1] : app.size[0];
    const sy = canvas.height / rows, sx = canvas.width / cols;
    for (let i = 0; i < cells; i++) {
      const rgb = viridis(cam.bytes[i] / 255);
      context.fillStyle = `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, 0.55)`;
      const r = Math.floor(i / cols), c = i % cols;
      context.fillRect(c * sx, app.rank === 2 ? r * sy : 0, sx + 0.5, app.rank === 2 ? sy + 0.5 : canvas.height);
    }
  }

  function renderTop(examples) {
    const box = $("detail-top");
    box.textContent = examples.length ? "" : "no test inputs (start the server with --data NAME)";
    examples.forEach((example) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      canvas.width = 84; canvas.height = app.rank === 2 ? 84 : 40;
      const image = decode(example.input);
      drawInput(canvas, inputGrid(image.values, image.shape));
      const caption = document.createElement("figcaption");
      caption.textContent = `#${example.index} (label ${example.label}): ${example.value.toFixed(2)}`;
      figure.append(canvas, caption);
      box.append(figure);
    });
  }

  function closeDetail() {
    $("detail").hidden = true;
    state.layer = null; state.unit = null;
    document.querySelectorAll("canvas.map.selected").forEach((c) => c.classList.remove("selected"));
    writeHash();
  }

  // ---- examples, shifts, pooling ----------------------------------------------------------
  async function loadExample(index) {
    if (!app.info.examples) { return; }
    index = ((index % app.info.examples) + app.info.examples) % app.info.examples;
    const answer = await api("/api/example?index=" + index);
    const flat = answer.input.flat(Infinity);
    const lo = app.info.value_range[0], span = (app.info.value_range[1] - lo) || 1;
    const per = flat.length / app.channels;
    app.ink = blankInk();
    for (let i = 0; i < per; i++) {
      let sum = 0;
      for (let c = 0; c < app.channels; c++) { sum += flat[c * per + i]; }
      app.ink[i] = Math.max(0, Math.min(1, (sum / app.channels - lo) / span));
    }
    state.example = index;
    $("example-label").textContent = `(test example #${index}, label ${answer.label})`;
    drawInput($("draw"), app.ink);
    writeHash();
    await refresh();
  }

  function shiftBy(delta) {
    state.shift = state.shift.map((s, k) => {
      const limit = app.size[k] - 1;
      return Math.max(-limit, Math.min(limit, s + delta[k]));
    });
    showShift();
    writeHash();
    refresh();
    if (state.layer) { select(state.layer, state.channel, null); }
  }

  function showShift() {
    $("shift-label").textContent = "shift " + (app.rank === 2
      ? `(${state.shift[0]}, ${state.shift[1]}) rows, columns` : `${state.shift[0]}`);
  }

  async function showConsistency() {
    if (!app.info.examples || app.info.task !== "classifier") { return; }
    $("consistency").textContent = "shift consistency: measuring…";
    try {
      const answer = await api("/api/consistency", { pool: state.pool, shift_mode: state.mode });
      $("consistency").textContent = `shift consistency ${(100 * answer.consistency).toFixed(1)}% ` +
        `(${answer.examples} test inputs, shifts up to ${answer.max_shift}, ${state.pool === "blur" ? "BlurPool" : "own pooling"})`;
    } catch (error) {
      $("consistency").textContent = "shift consistency: " + error.message;
    }
  }

  // ---- the address bar holds the view ---------------------------------------------------
  function writeHash() {
    const parts = new URLSearchParams();
    if (state.layer) { parts.set("layer", state.layer); parts.set("channel", String(state.channel)); }
    if (state.shift.some((s) => s !== 0)) { parts.set("shift", state.shift.join(",")); }
    if (state.mode !== "circular") { parts.set("mode", state.mode); }
    if (state.pool !== "model") { parts.set("pool", state.pool); }
    if (state.example !== null) { parts.set("example", String(state.example)); }
    history.replaceState(null, "", "#" + parts.toString());
  }

  function readHash() {
    const parts = new URLSearchParams(location.hash.slice(1));
    const shift = (parts.get("shift") || "").split(",").map((s) => parseInt(s, 10));
    state.shift = app.size.map((n, k) => (Number.isFinite(shift[k]) ? Math.max(-(n - 1), Math.min(n - 1, shift[k])) : 0));
    state.mode = parts.get("mode") === "zeros" ? "zeros" : "circular";
    state.pool = parts.get("pool") === "blur" && app.info.pools.includes("blur") ? "blur" : "model";
    state.layer = parts.get("layer");
    state.channel = Math.max(0, parseInt(parts.get("channel") || "0", 10) || 0);
    const example = parseInt(parts.get("example"), 10);
    state.example = Number.isFinite(example) ? example : null;
  }

  // ---- the stepper ------------------------------------------------------------------------
  const stepper = { input: null, kernel: null, padding: 0, out: null, position: 0, timer: null };

  function stepperLoad() {
    const source = $("stepper-source").value;
    if (source === "lecture") {
      stepper.input = app.lecture.input; stepper.kernel = app.lecture.filter;
      stepper.padding = app.lecture.padding;
      $("stepper-note").textContent = "The lecture's worked example: a 6x6 input, a 3x3 filter, zero padding 1 (same size).";
    } else {
      const filter = app.detail && app.detail.filter;
      const grid = app.last && decode(app.last.input);
      if (!filter || !grid || app.rank !== 2 || filter.weights.shape[0] !== 1 || app.channels !== 1) {
        $("stepper-note").textContent = "Click a feature map of the first convolution (one input channel, a 2-D model) to step its filter over the input.";
        $("stepper-source").value = "lecture";
        stepperLoad();
        return;
      }
      const weights = decode(filter.weights), [, kh, kw] = weights.shape, [h, w] = app.size;
      stepper.input = []; stepper.kernel = [];
      for (let r = 0; r < h; r++) { stepper.input.push(Array.from(grid.values.subarray(r * w, (r + 1) * w))); }
      for (let r = 0; r < kh; r++) { stepper.kernel.push(Array.from(weights.values.subarray(r * kw, (r + 1) * kw))); }
      stepper.padding = Math.floor(kh / 2);
      $("stepper-note").textContent = `${filter.layer}'s filter over the current input (padding ${stepper.padding}; the layer's bias is left out).`;
    }
    const n = stepper.input.length, m = stepper.input[0].length, k = stepper.kernel.length, kk = stepper.kernel[0].length;
    const rows = n + 2 * stepper.padding - k + 1, cols = m + 2 * stepper.padding - kk + 1;
    stepper.out = Array.from({ length: rows }, () => new Array(cols).fill(null));
    stepper.rows = rows; stepper.cols = cols;
    $("stepper-position").max = String(rows * cols);
    stepperGo(0);
  }

  function padded(r, c) {
    const p = stepper.padding, n = stepper.input.length, m = stepper.input[0].length;
    const i = r - p, j = c - p;
    return i < 0 || j < 0 || i >= n || j >= m ? null : stepper.input[i][j];
  }

  // Position t: the first t outputs are computed; the kernel sits on output t - 1.
  function stepperGo(t) {
    t = Math.max(0, Math.min(stepper.rows * stepper.cols, t));
    stepper.position = t;
    $("stepper-position").value = String(t);
    const k = stepper.kernel.length, kk = stepper.kernel[0].length;
    let terms = [];
    for (let q = 0; q < stepper.rows * stepper.cols; q++) {
      const r = Math.floor(q / stepper.cols), c = q % stepper.cols;
      if (q >= t) { stepper.out[r][c] = null; continue; }
      let sum = 0; const these = [];
      for (let a = 0; a < k; a++) {
        for (let b = 0; b < kk; b++) {
          const v = padded(r + a, c + b), x = v === null ? 0 : v;
          sum += x * stepper.kernel[a][b];
          these.push(`${fmt(x)}·${fmt(stepper.kernel[a][b])}`);
        }
      }
      stepper.out[r][c] = sum;
      if (q === t - 1) { terms = these; }
    }
    const at = t - 1, r = Math.floor(at / stepper.cols), c = at % stepper.cols;
    drawStepper(t > 0 ? [r, c] : null);
    $("stepper-sum").textContent = t > 0
      ? `output (${r}, ${c}) = ${terms.join(" + ")} = ${fmt(stepper.out[r][c])}`
      : `${stepper.rows}x${stepper.cols} outputs to compute: step forward.`;
    document.body.dataset.stepper = String(t);
  }

  function fmt(v) { return Number.isInteger(v) ? String(v) : v.toFixed(2); }

  const SVG = "http://www.w3.org/2000/svg";
  function svgGrid(svg, rows, cols, cell, valueAt, classAt, numbers) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("width", String(cols * cell + 2));
    svg.setAttribute("height", String(rows * cell + 2));
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", String(1 + c * cell)); rect.setAttribute("y", String(1 + r * cell));
        rect.setAttribute("width", String(cell)); rect.setAttribute("height", String(cell));
        rect.setAttribute("class", classAt(r, c));
        svg.append(rect);
        const v = valueAt(r, c);
        if (numbers && v !== null) {
          const text = document.createElementNS(SVG, "text");
          text.setAttribute("x", String(1 + c * cell + cell / 2));
          text.setAttribute("y", String(1 + r * cell + cell * 0.65));
          text.setAttribute("text-anchor", "middle");
          text.textContent = fmt(v);
          svg.append(text);
        }
      }
    }
  }

  function drawStepper(at) {
    const k = stepper.kernel.length, kk = stepper.kernel[0].length, p = stepper.padding;
    const n = stepper.input.length + 2 * p, m = stepper.input[0].length + 2 * p;
    const numbers = m <= 12, cell = numbers ? 28 : Math.max(6, Math.floor(360 / m));
    svgGrid($("stepper-input"), n, m, cell, (r, c) => padded(r, c) === null ? 0 : padded(r, c), (r, c) => {
      const inside = at && r >= at[0] && r < at[0] + k && c >= at[1] && c < at[1] + kk;
      return (padded(r, c) === null ? "pad" : "in") + (inside ? " footprint" : "");
    }, numbers);
    svgGrid($("stepper-kernel"), k, kk, numbers ? 28 : 16, (r, c) => stepper.kernel[r][c], () => "kernel", numbers);
    svgGrid($("stepper-output"), stepper.rows, stepper.cols, cell, (r, c) => stepper.out[r][c],
      (r, c) => (stepper.out[r][c] === null ? "todo" : "out") + (at && r === at[0] && c === at[1] ? " current" : ""), numbers);
    const output = $("stepper-output");
    output.dataset.values = JSON.stringify(stepper.out);
  }

  function setupStepper() {
    $("stepper-source").addEventListener("change", stepperLoad);
    $("stepper-back").addEventListener("click", () => stepperGo(stepper.position - 1));
    $("stepper-forward").addEventListener("click", () => stepperGo(stepper.position + 1));
    $("stepper-reset").addEventListener("click", () => stepperGo(0));
    $("stepper-position").addEventListener("input", (event) => stepperGo(parseInt(event.target.value, 10)));
    $("stepper-play").addEventListener("click", () => {
      if (stepper.timer) { clearInterval(stepper.timer); stepper.timer = null; $("stepper-play").textContent = "play"; return; }
      $("stepper-play").textContent = "pause";
      stepper.timer = setInterval(() => {
        if (stepper.position >= stepper.rows * stepper.cols) { clearInterval(stepper.timer); stepper.timer = null; $("stepper-play").textContent = "play"; return; }
        stepperGo(stepper.position + 1);
      }, 250);
    });
    stepperLoad();
  }

  // ---- the architecture table --------------------------------------------------------------
  function renderArchitecture() {
    const table = $("architecture-table");
    const head = ["layer", "op", "output shape", "parameters", "receptive field", "jump"];
    const row = (cells, tag) => {
      const tr = document.createElement("tr");
      cells.forEach((text) => { const td = document.createElement(tag); td.textContent = text; tr.append(td); });
      return tr;
    };
    table.append(row(head, "th"));
    let total = 0;
    app.info.layers.forEach((l) => {
      total += l.params;
      table.append(row([l.name, l.kind, l.output_shape.join("×"), l.params.toLocaleString("en"),
        l.receptive_field ? l.receptive_field.join("×") : "–", l.jump ? l.jump.join("×") : "–"], "td"));
    });
    table.append(row(["total", "", "", total.toLocaleString("en"), "", ""], "th"));
  }

  // ---- start -------------------------------------------------------------------------------
  async function start() {
    app.info = await api("/api/model");
    app.lecture = await api("/api/lecture-example");
    app.channels = app.info.input_shape[0];
    app.size = app.info.input_shape.slice(1);
    app.rank = app.size.length;
    app.ink = blankInk();
    $("model-name").textContent = `${app.info.name} (input ${app.info.input_shape.join("×")}` +
      (app.info.data ? `, ${app.info.data}` : "") + ")";
    document.title = "cnnlab explorer: " + app.info.name;
    if (!app.info.pools.includes("blur")) { $("pool").disabled = true; $("pool").title = "the model has no pooling to swap"; }
    if (!app.info.examples) { ["example-prev", "example-random", "example-next"].forEach((id) => { $(id).disabled = true; }); }
    readHash();
    $("shift-mode").value = state.mode;
    $("pool").value = state.pool;
    showShift();
    setupDrawing();
    setupStepper();
    renderArchitecture();
    drawInput($("draw"), app.ink);
    $("example-prev").addEventListener("click", () => loadExample((state.example ?? 0) - 1));
    $("example-next").addEventListener("click", () => loadExample((state.example ?? -1) + 1));
    $("example-random").addEventListener("click", () => loadExample(Math.floor(Math.random() * app.info.examples)));
    $("clear").addEventListener("click", () => {
      app.ink = blankInk(); state.example = null; $("example-label").textContent = "";
      drawInput($("draw"), app.ink); writeHash(); refresh();
    });
    $("shift-mode").addEventListener("change", (event) => { state.mode = event.target.value; writeHash(); refresh(); showConsistency(); });
    $("pool").addEventListener("change", (event) => {
      state.pool = event.target.value; writeHash(); refresh(); showConsistency();
      if (state.layer && layerInfo(state.layer)) { select(state.layer, state.channel, null); } else if (state.layer) { closeDetail(); }
    });
    $("detail-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
      if (!(event.key in moves) || event.target.tagName === "INPUT" || event.target.tagName === "SELECT") { return; }
      event.preventDefault();
      const [dy, dx] = moves[event.key];
      shiftBy(app.rank === 2 ? [dy, dx] : [dx]);
    });
    if (state.example !== null && app.info.examples) { await loadExample(state.example); } else { await refresh(); }
    showConsistency();
    if (state.layer && layerInfo(state.layer)) { select(state.layer, state.channel, null); } else { state.layer = null; }
    document.body.dataset.ready = "true";
  }

  start().catch((error) => { $("model-name").textContent = "could not start: " + error.message; });
})();
