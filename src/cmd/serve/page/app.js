// The page of `backprop serve`: plain JavaScript, no build step, nothing fetched from
// elsewhere. Every number it shows comes from the server's JSON endpoints.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  models: [],          // from /api/models
  model: null,         // the picked model's summary
  source: null,        // {test: index} or {drawing: true}: what the endpoints are sent
  busy: false,         // a request for the Draw tab is in flight
  again: false,        // the drawing changed while it was
  selected: null,      // the class whose saliency is shown
  run: { status: null, points: [], epochs: [] },
};

// ---- endpoints -------------------------------------------------------------------------

async function call(method, url, body) {
  const response = await fetch(url, { method, body });
  const json = await response.json();
  if (!response.ok) throw new Error(json.error || response.statusText);
  return json;
}

function modelQuery(extra) {
  const q = new URLSearchParams({ model: state.model.name, ...extra });
  if (state.source && state.source.test !== undefined) q.set('test', state.source.test);
  return q.toString();
}

/// The drawing as a PNG file, the body `backprop predict` would read.
function drawingBlob() {
  return new Promise((resolve) => $('pad').toBlob(resolve, 'image/png'));
}

async function sourceBody() {
  return state.source && state.source.drawing ? await drawingBlob() : undefined;
}

// ---- models ----------------------------------------------------------------------------

async function loadModels(pick) {
  const reply = await call('GET', '/api/models');
  state.models = reply.models;
  $('random').disabled = !reply.test_set;
  const select = $('model');
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  $('no-model').hidden = state.models.length > 0;
  const keep = pick || (state.model && state.model.name);
  const found = state.models.find((m) => m.name === keep) || state.models[0] || null;
  if (found) select.value = found.name;
  pickModel(found);
}

function pickModel(model) {
  state.model = model;
  state.selected = null;
  $('saliency-class').textContent = '';
  if (!model) return;
  const [c, h, w] = model.input;
  for (const id of ['input', 'saliency']) {
    $(id).width = w;
    $(id).height = h;
  }
  clearCanvas($('saliency'));
  buildBars(model);
  buildLayers(model);
  if (state.source) refresh();
  if (!$('filters').hidden) showFilters();
}

// ---- the drawing pad -------------------------------------------------------------------

function clearCanvas(canvas, colour = '#fff') {
  const g = canvas.getContext('2d');
  g.fillStyle = colour;
  g.fillRect(0, 0, canvas.width, canvas.height);
}

function setUpPad() {
  const pad = $('pad');
  const g = pad.getContext('2d');
  clearCanvas(pad);
  let last = null;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  const stroke = (from, to) => {
    g.strokeStyle = '#000';
    g.lineWidth = 20;
    g.lineCap = g.lineJoin = 'round';
    g.beginPath();
    g.moveTo(...from);
    g.lineTo(...to);
    g.stroke();
  };
  // pointer events cover the mouse, pens and fingers (touch-action: none in the CSS)
  pad.addEventListener('pointerdown', (e) => {
    pad.setPointerCapture(e.pointerId);
    last = at(e);
    stroke(last, last);
    drawn();
  });
  pad.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = at(e);
    stroke(last, p);
    last = p;
    drawn();
  });
  const end = () => { last = null; };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
  $('clear').addEventListener('click', () => {
    clearCanvas(pad);
    state.source = null;
    $('source').textContent = 'Draw with the mouse or a finger.';
  });
  $('random').addEventListener('click', randomDigit);
}

function drawn() {
  if (!state.source || !state.source.drawing) {
    state.source = { drawing: true };
    $('source').textContent = 'Your drawing.';
  }
  refresh();
}

async function randomDigit() {
  try {
    const d = await call('GET', '/api/test-digit');
    const [c, h, w] = d.shape;
    const pad = $('pad');
    const g = pad.getContext('2d');
    clearCanvas(pad);
    // MNIST is light ink on dark; the pad is dark on light
    const cw = pad.width / w, ch = pad.height / h;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = Math.round(255 * (1 - d.pixels[y * w + x]));
        g.fillStyle = `rgb(${v},${v},${v})`;
        g.fillRect(x * cw, y * ch, cw + 0.5, ch + 0.5);
      }
    }
    state.source = { test: d.index };
    $('source').textContent = `Test image ${d.index}, labelled ${d.name}: sent as it is.`;
    refresh();
  } catch (e) {
    $('source').textContent = e.message;
  }
}

// ---- what the network computes ---------------------------------------------------------

/// One request at a time: changes made while it runs are sent when it returns.
async function refresh() {
  if (!state.model || !state.source) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try {
    const reply = await call('POST', '/api/activations?' + modelQuery(), await sourceBody());
    showPrediction(reply);
    if (state.selected !== null) await showSaliency(state.selected);
  } catch (e) {
    $('timing').textContent = e.message;
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function buildBars(model) {
  const bars = $('bars');
  bars.replaceChildren();
  model.class_names.forEach((name, k) => {
    const row = document.createElement('div');
    row.className = 'bar';
    row.dataset.class = k;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill" style="width:0"></span></span><span class="value">-</span>';
    row.querySelector('.name').textContent = name;
    row.addEventListener('click', () => selectClass(k));
    bars.append(row);
  });
}

function showPrediction(reply) {
  const p = reply.probabilities;
  const top = reply.top[0].class;
  document.querySelectorAll('#bars .bar').forEach((row, k) => {
    row.querySelector('.fill').style.width = (100 * p[k]).toFixed(1) + '%';
    row.querySelector('.value').textContent = (100 * p[k]).toFixed(1) + '%';
    row.classList.toggle('top', k === top);
  });
  $('bars').dataset.top = top;
  drawImage($('input'), reply.input.pixels, reply.input.shape);
  reply.layers.forEach((layer, i) => drawLayer($('layers').children[i], layer));
  $('timing').textContent = `top: ${reply.top[0].name} (${(100 * reply.top[0].probability).toFixed(1)}%); `
    + `the server took ${reply.server_ms.toFixed(2)} ms`;
}

async function selectClass(k) {
  state.selected = k;
  document.querySelectorAll('#bars .bar').forEach((row, j) => row.classList.toggle('selected', j === k));
  $('saliency-class').textContent = 'of ' + state.model.class_names[k];
  if (state.source) await showSaliency(k);
}

async function showSaliency(k) {
  try {
    const reply = await call('POST', '/api/saliency?' + modelQuery({ class: k }), await sourceBody());
    drawSigned($('saliency'), reply.gradient, reply.input.shape);
    $('saliency').dataset.class = k;
    $('saliency-note').textContent = `∂(score of ${reply.name})/∂(input): red raises it, blue lowers it; `
      + `largest |gradient| ${Math.max(...reply.gradient.map(Math.abs)).toExponential(2)}.`;
  } catch (e) {
    $('saliency-note').textContent = e.message;
  }
}

// ---- drawing arrays --------------------------------------------------------------------

/// (C, H, W) values in [0, 1] into a canvas of W x H: grey, or RGB for three channels.
function drawImage(canvas, values, [c, h, w]) {
  const g = canvas.getContext('2d');
  const img = g.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) {
      const v = values[(c === 3 ? k : 0) * h * w + i];
      img.data[4 * i + k] = Math.round(255 * Math.min(1, Math.max(0, v)));
    }
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
}

/// Signed values, channels summed: red positive, blue negative, white zero.
function drawSigned(canvas, values, [c, h, w]) {
  const sum = new Float32Array(h * w);
  for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) sum[i] += values[k * h * w + i];
  const scale = Math.max(1e-30, ...sum.map(Math.abs));
  const g = canvas.getContext('2d');
  const img = g.createImageData(w, h);
  sum.forEach((v, i) => {
    const a = Math.min(1, Math.abs(v) / scale);
    const fade = Math.round(255 * (1 - a));
    img.data.set(v >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], 4 * i);
  });
  g.putImageData(img, 0, 0);
}

/// Values into grey levels, black at `lo` and white at `hi`.
function greyMap(values, offset, h, w, lo, hi) {
  const img = new ImageData(w, h);
  const span = hi - lo || 1;
  for (let i = 0; i < h * w; i++) {
    const v = Math.round(255 * (values[offset + i] - lo) / span);
    img.data.set([v, v, v, 255], 4 * i);
  }
  return img;
}

function range(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

// ---- layers ----------------------------------------------------------------------------

const MAX_MAPS = 64;

function buildLayers(model) {
  const box = $('layers');
  box.replaceChildren();
  for (const layer of model.layers) {
    const div = document.createElement('div');
    div.className = 'layer';
    div.dataset.name = layer.name;
    const h3 = document.createElement('h3');
    h3.textContent = `${layer.name} `;
    const shape = document.createElement('span');
    shape.className = 'shape';
    shape.textContent = `${layer.description} → ${layer.shape.join('×')}`;
    h3.append(shape);
    const maps = document.createElement('div');
    maps.className = 'maps';
    div.append(h3, maps);
    box.append(div);
  }
}

/// Feature maps (C, H, W) as small grey images on one scale for the layer; anything
/// else as a strip of cells.
function drawLayer(div, layer) {
  const maps = div.querySelector('.maps');
  const [lo, hi] = range(layer.values);
  if (layer.shape.length === 3) {
    const [c, h, w] = layer.shape;
    const shown = Math.min(c, MAX_MAPS);
    if (maps.children.length !== shown) {
      maps.replaceChildren(...Array.from({ length: shown }, () => {
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const zoom = Math.max(1, Math.round(56 / Math.max(h, w)));
        canvas.style.width = w * zoom + 'px';
        canvas.style.height = h * zoom + 'px';
        return canvas;
      }));
      if (c > shown) maps.append(Object.assign(document.createElement('span'), { className: 'note', textContent: `and ${c - shown} more` }));
    }
    for (let k = 0; k < shown; k++) {
      maps.children[k].getContext('2d').putImageData(greyMap(layer.values, k * h * w, h, w, lo, hi), 0, 0);
    }
  } else {
    const n = layer.values.length;
    const perRow = Math.min(n, 50), rows = Math.ceil(n / perRow);
    let canvas = maps.firstChild;
    if (!canvas || canvas.width !== perRow) {
      canvas = document.createElement('canvas');
      canvas.width = perRow; canvas.height = rows;
      canvas.style.width = perRow * 12 + 'px';
      canvas.style.height = rows * 12 + 'px';
      maps.replaceChildren(canvas);
    }
    const padded = Array.from({ length: perRow * rows }, (_, i) => (i < n ? layer.values[i] : lo));
    canvas.getContext('2d').putImageData(greyMap(padded, 0, rows, perRow, lo, hi), 0, 0);
  }
  div.dataset.rendered = 'true';
  div.title = `values from ${lo.toPrecision(3)} (black) to ${hi.toPrecision(3)} (white)`;
}

// ---- filters ---------------------------------------------------------------------------

async function showFilters() {
  const grid = $('filter-grid');
  grid.replaceChildren();
  if (!state.model) { $('filters-note').textContent = 'No model is loaded.'; return; }
  try {
    const f = await call('GET', '/api/filters?' + new URLSearchParams({ model: state.model.name }));
    const [n, c, h, w] = f.shape;
    const size = c * h * w;
    $('filters-title').textContent = `${f.layer}: ${n} filters of ${c}×${h}×${w}`;
    $('filters-note').textContent = 'Each filter scaled from its own smallest weight (black) to its largest (white), as the book\'s visualize_filter.py draws them'
      + (c === 3 ? '; colour filters in RGB.' : c > 1 ? '; the first channel of each.' : '.');
    for (let k = 0; k < n; k++) {
      const weights = f.values.slice(k * size, (k + 1) * size);
      const [lo, hi] = range(weights);
      const canvas = document.createElement('canvas');
      canvas.width = w; canvas.height = h;
      if (c === 3) {
        drawImage(canvas, weights.map((v) => (v - lo) / (hi - lo || 1)), [3, h, w]);
      } else {
        canvas.getContext('2d').putImageData(greyMap(weights, 0, h, w, lo, hi), 0, 0);
      }
      grid.append(canvas);
    }
  } catch (e) {
    $('filters-title').textContent = 'Filters';
    $('filters-note').textContent = e.message;
  }
}

// ---- training --------------------------------------------------------------------------

function setUpTraining() {
  $('train-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const settings = {};
    for (const [key, value] of new FormData(e.target)) {
      if (value.trim() === '') continue;
      settings[key] = ['lr'].includes(key) ? Number(value)
        : ['epochs', 'batch-size', 'seed'].includes(key) ? parseInt(value, 10) : value;
    }
    if (settings.model !== 'mlp' && settings.model !== 'two-layer') delete settings.hidden;
    try {
      await call('POST', '/api/train', JSON.stringify(settings));
      $('run-message').textContent = '';
    } catch (err) {
      $('run-message').textContent = err.message;
    }
  });
  $('stop').addEventListener('click', () => call('POST', '/api/train/stop').catch((e) => {
    $('run-message').textContent = e.message;
  }));
  $('open-checkpoint').addEventListener('click', async () => {
    await loadModels(state.run.status.checkpoint);
    showTab('draw');
  });
  const events = new EventSource('/api/train/events');
  events.addEventListener('run', (e) => followRun(JSON.parse(e.data)));
}

function followRun(event) {
  const run = state.run;
  if (event.points_from === 0) run.points = [];
  if (event.epochs_from === 0) run.epochs = [];
  run.points.push(...event.points);
  run.epochs.push(...event.epochs);
  run.status = event.status;
  showRun();
}

function showRun() {
  const s = state.run.status;
  const running = s.state === 'running';
  $('start').disabled = running;
  $('stop').disabled = !running;
  if (s.run === 0) return;
  let line = `Run ${s.run} (started by the ${s.started_by}): ${s.state}`;
  if (s.total) line += ` · update ${s.iteration} of ${s.total}, epoch ${s.epoch}`;
  if (s.updates_per_s) line += ` · ${s.updates_per_s.toFixed(0)} updates/s`;
  if (running && s.eta_s !== null) line += ` · ${s.eta_s.toFixed(1)} s left`;
  $('run-status').textContent = line;
  $('run-status').dataset.state = s.state;
  $('run-message').textContent = [s.settings, s.message].filter(Boolean).join(' · ');
  $('open-checkpoint').hidden = running || !s.checkpoint;
  $('open-checkpoint').textContent = `Open ${s.checkpoint} in Draw`;
  requestAnimationFrame(drawCharts);
}

function drawCharts() {
  const { points, epochs, status } = state.run;
  const loss = $('loss-chart');
  loss.dataset.points = points.length;
  chart(loss, [{ colour: '#2f6fd6', points: points.map(([i, l]) => [i, l]) }],
    { xMax: status.total || 1, xLabel: 'update', yMin: 0 });
  const acc = $('accuracy-chart');
  acc.dataset.points = epochs.length;
  const series = (key, colour) => ({ colour, dots: true, label: key.replace('_accuracy', ''),
    points: epochs.filter((e) => e[key] !== null).map((e) => [e.epoch, e[key]]) });
  chart(acc, [series('train_accuracy', '#1f9d55'), series('test_accuracy', '#d6502f'),
    series('validation_accuracy', '#8a5cd6')].filter((s) => s.points.length),
  { xMax: Math.max(1, status.total && status.per_epoch ? status.total / status.per_epoch : 1), xLabel: 'epoch', xMin: 0 });
}

/// The round tick step (1, 2 or 5 times a power of ten, at least 1: updates and epochs
/// are whole) nearest above `rough`.
function roundStep(rough) {
  if (!(rough > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
}

/// Lines (and dots) on axes with a few round ticks.
function chart(canvas, series, opts) {
  const g = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, L = 50, B = 34, T = 10, R = 16;
  g.clearRect(0, 0, W, H);
  const all = series.flatMap((s) => s.points);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  let yMin = opts.yMin ?? Math.min(...ys, 1);
  let yMax = ys.length ? Math.max(...ys) : 1;
  if (opts.yMin === undefined) { yMin = Math.max(0, Math.min(...ys) - 0.02); yMax = Math.min(1, yMax + 0.02); }
  if (yMax <= yMin) yMax = yMin + 1;
  const xMin = opts.xMin ?? 0, xMax = opts.xMax;
  const X = (x) => L + (W - L - R) * (x - xMin) / (xMax - xMin || 1);
  const Y = (y) => H - B - (H - B - T) * (y - yMin) / (yMax - yMin);
  g.strokeStyle = '#c3c9d0'; g.fillStyle = '#5d6670'; g.font = '12px system-ui, sans-serif';
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  for (let k = 0; k <= 4; k++) {
    const y = yMin + (yMax - yMin) * k / 4;
    g.fillText(y.toPrecision(3), 4, Y(y) + 4);
  }
  const step = roundStep((xMax - xMin) / 4);
  for (let x = Math.ceil(xMin / step) * step; x <= xMax + 1e-9; x += step) {
    g.fillText(String(+x.toPrecision(6)), X(x) - 8, H - B + 16);
  }
  g.fillText(opts.xLabel, W - R - 50, H - 4);
  series.forEach((s, n) => {
    g.strokeStyle = g.fillStyle = s.colour;
    g.lineWidth = 2;
    g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    if (s.dots) s.points.forEach(([x, y]) => { g.beginPath(); g.arc(X(x), Y(y), 3.5, 0, 7); g.fill(); });
    if (s.label) g.fillText(s.label, L + 10 + 70 * n, T + 12);
  });
}

// ---- tabs ------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll('.tab').forEach((t) => t.setAttribute('aria-selected', t.dataset.tab === name));
  for (const id of ['draw', 'filters', 'train']) $(id).hidden = id !== name;
  if (name === 'filters') showFilters();
}

document.querySelectorAll('.tab').forEach((t) => t.addEventListener('click', () => showTab(t.dataset.tab)));
$('model').addEventListener('change', (e) => pickModel(state.models.find((m) => m.name === e.target.value)));
setUpPad();
setUpTraining();
loadModels().catch((e) => { $('no-model').hidden = false; $('no-model').textContent = e.message; });
