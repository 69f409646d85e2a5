// cnn-serve explorer: draw or upload an image, see every head's prediction, every layer's
// feature maps and Grad-CAM - all from this service's own API (/models, feature-maps,
// explain), no other network. Plain browser JavaScript: no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 40;  // while drawing: at most one update per pause this long
const PEN = 20;          // stroke width on the 280 px canvas (MNIST strokes are ~2/28 wide)
const state = {
  models: [],        // from GET /models
  defaultModel: "",  // its default_model
  detail: null,      // GET /models/{name}/versions/{v}: metadata and layer table
  strokes: [],       // drawn strokes, each a list of [x, y]; Undo pops one
  background: null,  // an uploaded/sample image under the strokes (ImageBitmap)
  file: null,        // the uploaded bytes, sent as they are while nothing is drawn over them
  busy: false, again: false, timer: 0,
  lastInput: 0,      // when the pen last moved (performance.now()), for the latency shown
  shown: null,       // the model the page shows (the input was chosen for it)
  maps: new Map(),   // layer name -> its maps for the current input (feature-maps answer)
  groups: null,      // a large model's layer groups (null: one list)
  input: null,       // {blob, model, version, scaling} of the maps shown, for opened groups
  channel: null,     // {layer name, channel} shown enlarged
};

// ---------------------------------------------------------------- API
const RETRIES = 3;  // a 503 with Retry-After (busy, e.g. Grad-CAM for others): wait and retry

function keyHeaders() {
  // with API keys on, the key typed into the page (kept for this tab only) goes along
  const key = sessionStorage.getItem("cnn-serve-key");
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}, attempt = 0) {
  const response = await fetch(path, { ...options, headers: keyHeaders() });
  const wait = Number(response.headers.get("Retry-After"));
  if (response.status === 503 && wait > 0 && attempt < RETRIES) {
    await new Promise((resolve) => setTimeout(resolve, 1000 * Math.min(wait, 5)));
    return api(path, options, attempt + 1);
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) $("key-box").hidden = false;
  if (!response.ok) {
    const message = body.error && (body.error.message || body.error) || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? `Could not read that: ${error.message}` : "";
}

// ---------------------------------------------------------------- models
async function loadModels() {
  const list = await api("/models");
  state.models = list.models.filter((m) => m.ready);
  state.defaultModel = list.default_model;
  $("open-model-box").hidden = !list.model_uploads;
  $("model").replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  $("model").value = list.default_model;
  await selectModel();
}

// a Keras model file from this computer becomes a version of the service (uploads on)
$("open-model").addEventListener("change", async () => {
  const file = $("open-model").files[0];
  if (!file) return;
  const name = file.name.replace(/\.(keras|h5|hdf5)$/i, "").replace(/[^A-Za-z0-9_.-]/g, "_")
    .replace(/^[^A-Za-z0-9]+/, "").slice(0, 64) || "my_model";
  const data = new FormData();
  data.append("file", file, file.name);
  try {
    await api(`/models/${encodeURIComponent(name)}/versions`, { method: "POST", body: data });
    await loadModels();
    $("model").value = name;
    await selectModel();
  } catch (error) {
    showError(error);
  } finally {
    $("open-model").value = "";
  }
});

async function selectModel() {
  const model = state.models.find((m) => m.name === $("model").value);
  state.shown = model.name;
  const ready = model.versions.filter((v) => v.status === "ready").map((v) => v.version);
  $("version").replaceChildren(...ready.map((v) => new Option(`v${v}`, v)));
  $("version").value = model.default_version;
  await selectVersion();
}

async function selectVersion() {
  state.detail = await api(`/models/${$("model").value}/versions/${$("version").value}`);
  const outputs = state.detail.metadata.outputs;
  $("cam-head").replaceChildren(...outputs.map((o) => new Option(o.name, o.name)));
  $("cam-layer").replaceChildren(new Option("default (last feature map the head uses)", ""),
    ...state.detail.layers.filter((l) => l.output_shape.length === 3)
      .map((l) => new Option(l.name, l.name)));
  fillClasses();
  renderNetwork();
  renderSamples().catch(showError);
  update();
}

function fillClasses() {
  const head = state.detail.metadata.outputs.find((o) => o.name === $("cam-head").value);
  $("cam-class").replaceChildren(new Option("predicted", ""),
    ...head.labels.map((label, i) => new Option(label, i)));
}

// ---------------------------------------------------------------- drawing and input
const canvas = $("draw");
const ctx = canvas.getContext("2d");

function paint() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (state.background) {
    const b = state.background, s = Math.min(canvas.width / b.width, canvas.height / b.height);
    ctx.imageSmoothingEnabled = b.width < canvas.width / 2 ? false : true;
    ctx.drawImage(b, (canvas.width - b.width * s) / 2, (canvas.height - b.height * s) / 2,
                  b.width * s, b.height * s);
  }
  ctx.strokeStyle = "#000"; ctx.lineWidth = PEN; ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    ctx.beginPath();
    stroke.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function point(event) {
  const r = canvas.getBoundingClientRect();
  return [(event.clientX - r.left) * canvas.width / r.width,
          (event.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  state.strokes.push([point(event)]);
  state.file = null;  // the canvas (strokes over any image) is now the input
  paint();
  schedule();
  state.lastInput = performance.now();
});
canvas.addEventListener("pointermove", (event) => {
  if (!canvas.hasPointerCapture(event.pointerId)) return;
  state.strokes[state.strokes.length - 1].push(point(event));
  paint();
  schedule();
  state.lastInput = performance.now();
});
canvas.addEventListener("pointerup", () => schedule());

$("clear").addEventListener("click", () => {
  state.strokes = []; state.background = null; state.file = null;
  paint(); update();
});
$("undo").addEventListener("click", () => {
  state.strokes.pop();
  paint(); update();
});

async function useFile(blob) {
  try {
    state.background = await createImageBitmap(blob);
  } catch {
    state.background = null;  // the service says what is wrong with it
  }
  state.strokes = []; state.file = blob;
  paint(); update();
}

$("upload").addEventListener("change", () => $("upload").files[0] && useFile($("upload").files[0]));
canvas.addEventListener("dragover", (e) => { e.preventDefault(); canvas.classList.add("dragging"); });
canvas.addEventListener("dragleave", () => canvas.classList.remove("dragging"));
canvas.addEventListener("drop", (e) => {
  e.preventDefault(); canvas.classList.remove("dragging");
  if (e.dataTransfer.files[0]) useFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) useFile(item.getAsFile());
});

/** The version's own samples (kept with it by cnn-serve import --samples), fetched with the
 * API key when there is one; a click makes one the input. */
async function renderSamples() {
  const { name, version, samples } = state.detail;
  const buttons = await Promise.all(samples.map(async (sample) => {
    const path = `/models/${encodeURIComponent(name)}/versions/${version}/samples/${encodeURIComponent(sample)}`;
    const response = await fetch(path, { headers: keyHeaders() });
    if (!response.ok) return null;
    const blob = await response.blob();
    const button = document.createElement("button");
    button.type = "button";
    button.title = sample.replace(/\.png$/, "");
    const img = new Image();
    img.src = URL.createObjectURL(blob);
    img.alt = `sample: ${button.title}`;
    button.append(img);
    button.addEventListener("click", () => useFile(blob));
    return button;
  }));
  if (state.detail.name !== name || state.detail.version !== version) return;  // moved on
  for (const img of $("samples").querySelectorAll("img")) URL.revokeObjectURL(img.src);
  $("samples").replaceChildren(...buttons.filter(Boolean));
  $("samples-hint").textContent = samples.length
    ? "Draw, upload, drop or paste an image, or pick a sample:"
    : "Draw, upload, drop or paste an image (this version keeps no samples).";
}

// ---------------------------------------------------------------- updating
function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(update, DEBOUNCE_MS);
}

function inputBlob() {
  if (state.file) return state.file;
  // toDataURL, not toBlob: Chromium encodes toBlob in an idle period, up to 1 s later
  const bytes = atob(canvas.toDataURL("image/png").split(",")[1]);
  return new Blob([Uint8Array.from(bytes, (c) => c.charCodeAt(0))], { type: "image/png" });
}

function form(blob, fields) {
  const data = new FormData();
  data.append("file", blob, "input.png");
  for (const [k, v] of Object.entries(fields)) if (v !== "") data.append(k, v);
  return { method: "POST", body: data };
}

async function update() {
  if (!state.detail) return;
  if (state.busy) { state.again = true; return; }  // one request at a time; the latest wins
  if (!state.file && !state.background && !state.strokes.length) return clearResults();
  state.busy = true;
  const started = performance.now();
  try {
    const blob = inputBlob();
    const model = $("model").value, version = $("version").value;
    const scaling = document.querySelector("input[name=scaling]:checked").value;
    // a SavedModel served as it came has no layers to show: its prediction alone
    const layered = state.detail.metadata.signatures.includes("feature_maps");
    const layers = wantedLayers();
    const image = layered
      ? (await api(`/models/${model}/feature-maps`, form(blob, { version, scaling, layers }))).images[0]
      : (await api("/predict", form(blob, { model, version }))).predictions[0];
    renderPrediction(image.outputs);
    clearMaps();
    state.input = layered ? { blob, model, version, scaling } : null;
    const pictures = layered ? renderMaps(image.layers) : [];
    showError(null);
    const since = state.file ? started : Math.max(started - DEBOUNCE_MS, state.lastInput);
    Promise.all(pictures.map((img) => img.decode())).then(() => {
      // from the pen's last movement to every layer's picture on screen
      const ms = performance.now() - since;
      $("timing").textContent = `(${ms.toFixed(0)} ms)`;
      document.body.dataset.updateMs = ms.toFixed(1);  // read by the browser tests
    }, () => {});
    if (layered) await explain(blob).catch(camError);
    else camError(new Error("this version is a SavedModel without its Keras model"));
  } catch (error) {
    clearResults();
    showError(error);
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; update(); }
  }
}

function clearResults() {
  $("prediction").textContent = "–";
  $("heads").replaceChildren();
  $("gradcam").hidden = true;
  $("seen").hidden = true;
  clearMaps();
  closeChannel();
  state.input = null;
  showError(null);
}

async function explain(blob) {
  const answer = await api(`/models/${$("model").value}/explain`, form(blob || inputBlob(), {
    version: $("version").value, output: $("cam-head").value,
    class_index: $("cam-class").value, layer: $("cam-layer").value,
  }));
  $("gradcam").src = `data:image/png;base64,${answer.overlay}`;
  $("gradcam").hidden = false;
  $("cam-caption").textContent =
    `${answer.output} = ${answer.label}, at layer ${answer.layer} (red: most evidence)`;
}

function camError(error) {
  // Grad-CAM alone failed (e.g. a version without model.keras): say so where it would be
  $("gradcam").hidden = true;
  $("cam-caption").textContent = `No Grad-CAM: ${error.message}`;
}

for (const id of ["cam-head", "cam-class", "cam-layer"]) {
  $(id).addEventListener("change", () => {
    if (id === "cam-head") fillClasses();
    if ($("prediction").textContent !== "–") explain().catch(camError);
  });
}
/** Whether an input chosen for one model suits another: the same image size, colours and
 * preprocessing (digit_odd and digit_odd_plus; cifar10 and its ResNet). A drawn 7 sent to a
 * shape classifier is an answer to a question nobody asked. */
function takesTheSameInput(a, b) {
  return Boolean(a && b && a.input && b.input)
    && a.input.shape.join() === b.input.shape.join()
    && a.input.color_mode === b.input.color_mode
    && a.input.preprocessing === b.input.preprocessing;
}

$("model").addEventListener("change", () => {
  const find = (name) => state.models.find((m) => m.name === name);
  if (!takesTheSameInput(find(state.shown), find($("model").value))) {
    state.strokes = []; state.background = null; state.file = null;  // pick one for this model
    paint();
  }
  selectModel().catch(showError);
});
$("version").addEventListener("change", () => selectVersion().catch(showError));
document.querySelectorAll("input[name=scaling]").forEach((r) => r.addEventListener("change", update));

// ---------------------------------------------------------------- predictions
// what a head said, in a few words: a label, the labels that apply, or its values
function verdict(out) {
  if (out.kind === "multilabel") return out.labels.length ? out.labels.join(", ") : "no label";
  if (out.values) {
    return Object.entries(out.values).slice(0, 3)
      .map(([name, v]) => `${name} ${v.toPrecision(4)}`).join(", ");
  }
  return out.label;
}

function renderPrediction(outputs) {
  const heads = Object.entries(outputs);
  $("prediction").textContent = verdict(heads[0][1]);
  $("heads").replaceChildren(...heads.map(([name, out]) => {
    const box = document.createElement("div");
    box.className = "head";
    box.dataset.kind = out.kind;
    const title = document.createElement("h3");
    title.textContent = `${name}: ${verdict(out)}`;
    box.append(title);
    if (out.values) {  // regression, raw: numbers, not probabilities
      for (const [label, v] of Object.entries(out.values)) box.append(value(label, v));
      return box;
    }
    const labels = state.detail.metadata.outputs.find((o) => o.name === name).labels;
    const rows = out.kind === "binary"  // a sigmoid head: p of its positive label
      ? [[labels[1], out.probability], [labels[0], 1 - out.probability]]
      : Object.entries(out.probabilities);
    const chosen = (label) => out.kind === "multilabel" ? out.labels.includes(label) : label === out.label;
    for (const [label, p] of rows) box.append(bar(label, p, chosen(label)));
    return box;
  }));
}

function value(label, v) {
  const row = document.createElement("div");
  row.className = "value";
  row.innerHTML = '<span class="l"></span><span class="v"></span>';
  row.querySelector(".l").textContent = label;
  row.querySelector(".v").textContent = v.toPrecision(6);
  return row;
}

function bar(label, p, top) {
  const row = document.createElement("div");
  row.className = top ? "bar top" : "bar";
  row.setAttribute("role", "meter");
  row.setAttribute("aria-label", label);
  row.setAttribute("aria-valuemin", "0");
  row.setAttribute("aria-valuemax", "1");
  row.setAttribute("aria-valuenow", p.toFixed(4));
  row.innerHTML = '<span class="l"></span><span class="track"><span class="fill"></span></span><span class="p"></span>';
  row.querySelector(".l").textContent = label;
  row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
  row.querySelector(".p").textContent = `${(p * 100).toFixed(1)} %`;
  return row;
}

// ---------------------------------------------------------------- the network and its maps
const GROUP_FROM = 24;   // layers: a model with fewer shows them as one list
const GROUP_MAX = 12;    // layers in a group that is not a named block
const OPEN_LAYERS = 10;  // groups open at first while they hold no more layers than this

function shape(s) { return s.join("×"); }

/** The layer table as groups: by nested model, then by block where consecutive names share
 * their longest prefix ending in a number (block_3_expand, block_3_depthwise... -> block_3;
 * stage2_block1_conv1 -> stage2_block1); the layers between blocks in groups of at most
 * GROUP_MAX. */
function groupsOf(layers) {
  const runs = [];
  for (const layer of layers) {
    const cut = layer.name.lastIndexOf("/");
    const nest = cut < 0 ? "" : layer.name.slice(0, cut);
    const key = (/^(.*\d)_/.exec(layer.name.slice(cut + 1)) || ["", ""])[1];
    const last = runs[runs.length - 1];
    if (last && last.nest === nest && last.key === key) last.layers.push(layer);
    else runs.push({ nest, key, layers: [layer] });
  }
  const groups = [];
  for (const run of runs) {
    if (run.key && run.layers.length >= 3) { groups.push(run); continue; }
    for (const layer of run.layers) {  // not a block: with the loose layers around it
      const last = groups[groups.length - 1];
      if (last && !last.key && last.nest === run.nest && last.layers.length < GROUP_MAX) last.layers.push(layer);
      else groups.push({ nest: run.nest, key: "", layers: [layer] });
    }
  }
  const local = (name) => name.slice(name.lastIndexOf("/") + 1);
  return groups.map((g) => {
    const first = local(g.layers[0].name), last = local(g.layers[g.layers.length - 1].name);
    const what = g.key || (first === last ? first : `${first} … ${last}`);
    return { ...g, title: `${g.nest ? `${g.nest} / ` : ""}${what}` };
  });
}

function layerItem(layer, previous) {
  const item = document.createElement("li");
  item.setAttribute("data-testid", "layer");
  item.id = `layer-${layer.name}`;
  item.dataset.search = `${layer.name} ${layer.type}`.toLowerCase();
  if (layer.inbound.length > 1) item.classList.add("merge");
  else if (previous && layer.inbound[0] !== previous) item.classList.add("branch");
  const head = document.createElement("div");
  head.className = "layer-head";
  head.innerHTML = "<strong></strong><span class=t></span><span class=s></span><span class=n></span><span class=from></span>";
  head.querySelector("strong").textContent = layer.name;
  head.querySelector(".t").textContent = layer.type;
  head.querySelector(".s").textContent = shape(layer.output_shape);
  head.querySelector(".n").textContent = `${layer.params.toLocaleString("en")} params`;
  head.querySelector(".from").textContent = layer.inbound.length ? `← ${layer.inbound.join(" + ")}` : "input";
  const maps = document.createElement("div");
  maps.className = "maps";
  item.append(head, maps);
  return item;
}

function renderNetwork() {
  const layers = state.detail ? state.detail.layers : [];
  closeChannel();
  state.maps = new Map();
  const items = layers.map((layer, i) => layerItem(layer, i > 0 ? layers[i - 1].name : null));
  $("branch-legend").hidden = !items.some((li) => li.matches(".branch, .merge"));
  $("layer-filter-box").hidden = layers.length < GROUP_FROM;
  $("layer-filter").value = "";
  if (layers.length < GROUP_FROM) {
    state.groups = null;
    return $("layers").replaceChildren(...items);
  }
  const byName = new Map(layers.map((l, i) => [l.name, items[i]]));
  let shown = 0;
  state.groups = groupsOf(layers).map((group, i) => {
    const box = document.createElement("li");
    box.className = "group";
    const details = document.createElement("details");
    details.setAttribute("data-testid", "layer-group");
    details.open = i === 0 || shown + group.layers.length <= OPEN_LAYERS;
    if (details.open) shown += group.layers.length;
    const summary = document.createElement("summary");
    summary.textContent = `${group.title} (${group.layers.length} layer${group.layers.length > 1 ? "s" : ""})`;
    const list = document.createElement("ol");
    list.append(...group.layers.map((l) => byName.get(l.name)));
    details.append(summary, list);
    details.addEventListener("toggle", () => { if (details.open) fetchMaps(group).catch(showError); });
    box.append(details);
    return { ...group, details, box };
  });
  $("layers").replaceChildren(...state.groups.map((g) => g.box));
}

/** The layers whose maps the page asks for with an input: every layer of a small model (""),
 * else those of the open groups and the input (for the preview). */
function wantedLayers() {
  if (!state.groups) return "";
  const names = state.groups.filter((g) => g.details.open).flatMap((g) => g.layers.map((l) => l.name));
  const input = state.detail.layers.find((l) => l.type === "InputLayer");
  if (input && !names.includes(input.name)) names.unshift(input.name);
  return names.join(",");
}

/** An opened group's maps for the current input, unless it has them. */
async function fetchMaps(group) {
  const missing = group.layers.map((l) => l.name).filter((name) => !state.maps.has(name));
  if (!state.input || !missing.length) return;
  const { blob, model, version, scaling } = state.input;
  const answer = await api(`/models/${model}/feature-maps`,
                           form(blob, { version, scaling, layers: missing.join(",") }));
  if (state.input && state.input.blob === blob) renderMaps(answer.images[0].layers);
}

function filterLayers() {
  const query = $("layer-filter").value.trim().toLowerCase();
  for (const li of document.querySelectorAll("#layers [data-testid=layer]")) {
    li.hidden = Boolean(query) && !li.dataset.search.includes(query);
  }
  for (const group of state.groups || []) {
    const matches = group.layers.some((l) => !$(`layer-${l.name}`).hidden);
    group.box.hidden = !matches;
    if (query && matches) group.details.open = true;
  }
}
$("layer-filter").addEventListener("input", filterLayers);

function clearMaps() {
  state.maps = new Map();
  for (const maps of document.querySelectorAll("#layers .maps")) maps.replaceChildren();
}

function renderMaps(layers) {
  // each layer's picture into its card (a dense layer's values as a bar chart); returns the
  // <img> elements
  const pictures = [];
  for (const layer of layers) {
    const maps = $(`layer-${layer.name}`)?.querySelector(".maps");
    if (!maps) continue;
    state.maps.set(layer.name, layer);
    const img = new Image();
    img.src = `data:image/png;base64,${layer.image.png_base64}`;
    img.alt = `${layer.name}: ${layer.image.layout}`;
    const [low, high] = layer.image.color_scale.range;
    const range = document.createElement("div");
    range.className = "range";
    range.textContent = `${layer.image.layout}; values ${low.toPrecision(3)} … ${high.toPrecision(3)}`
      + (layer.image.color_scale.scaling === "per_channel" ? " (each channel scaled alone)" : "");
    if (layer.image.grid) {
      const zoom = Math.max(1, Math.min(6, Math.floor(560 / layer.image.width),
                                        Math.floor(400 / layer.image.height)));
      img.width = layer.image.width * zoom;
      img.tabIndex = 0;
      img.addEventListener("click", (e) => showChannel(layer.name, tileAt(layer.image, img, e)));
      img.addEventListener("keydown", (e) => { if (e.key === "Enter") showChannel(layer.name, 0); });
    } else {
      barChart(layer, img);
    }
    maps.replaceChildren(img, range);
    pictures.push(img);
    if (layer.type === "InputLayer") showSeen(layer.image);
  }
  if (state.channel && state.maps.has(state.channel.name)) showChannel(state.channel.name, state.channel.channel);
  return pictures;
}

/** A dense layer's units as bars (up from zero, or down), from its strip's gray levels: the
 * strip maps [low, high] to 0..255, one cell per unit, in unit order. Over MAX_BARS units, a
 * bar stands for a run of them (the one farthest from zero). */
const MAX_BARS = 1280;
function barChart(layer, img) {
  const units = layer.output_shape.reduce((a, b) => a * (b || 1), 1);
  const [low, high] = layer.image.color_scale.range;
  const strip = new Image();
  strip.onload = () => {
    const src = document.createElement("canvas");
    src.width = strip.width; src.height = strip.height;
    const s = src.getContext("2d");
    s.drawImage(strip, 0, 0);
    const data = s.getImageData(0, 0, strip.width, strip.height).data;
    const value = (i) => low + data[i * 4] / 255 * (high - low);
    const bars = Math.min(units, MAX_BARS);
    const width = Math.max(1, Math.min(40, Math.floor(560 / bars))), height = 80;
    const c = document.createElement("canvas");
    c.width = bars * width; c.height = height;
    const out = c.getContext("2d");
    const top = Math.max(high, 0), bottom = Math.min(low, 0), span = top - bottom || 1;
    const zero = height * top / span;
    out.fillStyle = "#f8fafc"; out.fillRect(0, 0, c.width, height);
    for (let b = 0; b < bars; b++) {
      let v = 0;
      for (let u = Math.floor(b * units / bars); u < Math.floor((b + 1) * units / bars); u++) {
        if (Math.abs(value(u)) > Math.abs(v)) v = value(u);
      }
      const h = Math.max(Math.abs(v) / span * height, 0.5);
      out.fillStyle = v >= 0 ? "#2563eb" : "#ea580c";
      out.fillRect(b * width, v >= 0 ? zero - h : zero, Math.max(1, width - (width > 2 ? 1 : 0)), h);
    }
    out.fillStyle = "#94a3b8"; out.fillRect(0, Math.round(zero), c.width, 1);
    img.onload = null;
    img.src = c.toDataURL();
    img.alt = `${layer.name}: ${units} units as bars`;
    img.classList.add("bars");
  };
  strip.src = img.src;
}

function tileAt(image, img, event) {
  const scale = img.clientWidth / image.width, g = image.grid;
  const col = Math.floor(event.offsetX / scale / (g.tile_width + 1));
  const row = Math.floor(event.offsetY / scale / (g.tile_height + 1));
  return Math.min(row * g.cols + col, image.color_scale.channel_ranges.length - 1);
}

function tile(image, channel, draw) {
  // draw(img, sx, sy, w, h) with the channel's tile in the layer's grid picture
  const g = image.grid, img = new Image();
  img.onload = () => draw(img, (channel % g.cols) * (g.tile_width + 1),
                          Math.floor(channel / g.cols) * (g.tile_height + 1), g.tile_width, g.tile_height);
  img.src = `data:image/png;base64,${image.png_base64}`;
}

/** The channel enlarged in place: under its layer's maps, scrolled into view. */
function showChannel(name, channel) {
  const layer = state.maps.get(name);
  const count = layer.image.color_scale.channel_ranges.length;
  channel = (channel + count) % count;
  const moved = !state.channel || state.channel.name !== name;
  state.channel = { name, channel };
  const [low, high] = layer.image.color_scale.channel_ranges[channel];
  const box = $("channel");
  $(`layer-${name}`).append(box);
  box.hidden = false;
  $("channel-caption").textContent =
    `${layer.name}, channel ${channel + 1} of ${count}: values ${low.toPrecision(3)} … ${high.toPrecision(3)}`;
  const out = $("channel-canvas").getContext("2d");
  tile(layer.image, channel, (img, sx, sy, w, h) => {
    out.imageSmoothingEnabled = false;
    out.drawImage(img, sx, sy, w, h, 0, 0, 168, 168);
  });
  // once laid out (pictures above may still be decoding): in view, moving no more than needed
  if (moved) requestAnimationFrame(() => box.scrollIntoView({ block: "nearest" }));
}

function closeChannel() {
  state.channel = null;
  $("channel").hidden = true;
  $("network-panel").append($("channel"));  // out of a list that may be replaced
}

$("channel-prev").addEventListener("click", () => state.channel && showChannel(state.channel.name, state.channel.channel - 1));
$("channel-next").addEventListener("click", () => state.channel && showChannel(state.channel.name, state.channel.channel + 1));
$("channel-close").addEventListener("click", closeChannel);

function showSeen(image) {
  // the input as the model sees it: one gray tile, or three tiles put back together as colour,
  // its values mapped back to display pixels by the version's value range (black .. white)
  const g = image.grid, scale = image.color_scale;
  const [black, white] = state.detail.metadata.input.value_range;
  const c = document.createElement("canvas");
  c.width = g.tile_width; c.height = g.tile_height;
  const out = c.getContext("2d");
  const channels = scale.channel_ranges.length;
  const grid = new Image();
  grid.onload = () => {
    const src = document.createElement("canvas");
    src.width = image.width; src.height = image.height;
    const s = src.getContext("2d");
    s.drawImage(grid, 0, 0);
    const pixels = out.createImageData(g.tile_width, g.tile_height);
    for (let ch = 0; ch < Math.min(channels, 3); ch++) {
      const x0 = (ch % g.cols) * (g.tile_width + 1), y0 = Math.floor(ch / g.cols) * (g.tile_height + 1);
      const data = s.getImageData(x0, y0, g.tile_width, g.tile_height).data;
      const [low, high] = scale.scaling === "per_channel" ? scale.channel_ranges[ch] : scale.range;
      for (let i = 0; i < g.tile_width * g.tile_height; i++) {
        const value = low + data[i * 4] / 255 * (high - low);
        const v = Math.round((value - black) / (white - black) * 255);
        for (const k of channels === 1 ? [0, 1, 2] : [ch]) pixels.data[i * 4 + k] = v;
        pixels.data[i * 4 + 3] = 255;
      }
    }
    out.putImageData(pixels, 0, 0);
    $("seen").src = c.toDataURL();
    $("seen").hidden = false;
  };
  grid.src = `data:image/png;base64,${image.png_base64}`;
}

function useKey(event) {
  if (event) event.preventDefault();
  sessionStorage.setItem("cnn-serve-key", $("api-key").value.trim());
  loadModels().then(() => showError(null), showError);
}
$("api-key").addEventListener("change", () => useKey());
$("key-box").addEventListener("submit", useKey);

// ---------------------------------------------------------------- start
paint();
loadModels().catch(showError);
