// genrekit serve's page: no framework, no external requests. Everything the server says is
// shown with textContent (file names and genres are never parsed as HTML).
"use strict";

const PALETTE = ["#3b6fd8", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#2e4057", "#c0392b", "#7cb518",
                 "#d81159", "#0f7173", "#a05195", "#665191", "#ff7c43", "#2f4b7c", "#ffa600", "#888888"];
const state = { model: null, token: sessionStorage.getItem("genrekit-token") || "", labels: {} };

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e[k] = v;
  }
  for (const kid of kids) e.append(kid);
  return e;
};
const colour = (genre) => {
  const i = state.model ? state.model.labels.indexOf(genre) : -1;
  return i < 0 ? "#999" : PALETTE[i % PALETTE.length];
};
const pct = (p) => (100 * p).toFixed(1) + "%";
const say = (msg) => { $("#status").textContent = msg || ""; };

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { $("#token-box").hidden = false; }
  const type = r.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await r.json() : await r.blob();
  return { status: r.status, ok: r.ok, body };
}
const postJSON = (path, obj) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(obj) });

// -- the run ------------------------------------------------------------------------------------

async function loadModel() {
  const r = await api("/v1/model");
  if (!r.ok) { $("#run-info").textContent = (r.body && r.body.error) || "cannot read the run"; return; }
  const m = state.model = r.body;
  $("#run-name").textContent = m.run;
  const rej = m.rejection && m.rejection.rule ? `; unknown by ${m.rejection.rule.replace("_", " ")} ` +
    `(threshold ${Number(m.rejection.threshold).toPrecision(3)})` : "";
  const fig = m.metrics && m.metrics.test && m.metrics.test.track ?
    `; test track top-1 ${pct(m.metrics.test.track.top1)} (n=${m.metrics.test.track.n})` : "";
  $("#run-info").textContent = `${m.arch}: ${m.labels.join(", ")} — ${m.sample_rate} Hz, ` +
    `${m.window_s.toFixed(2)} s windows${rej}${fig}`;
  $("#library").hidden = !m.library;
  if (m.library) refreshLabels();
}

// -- bars and the timeline -------------------------------------------------------------------

function bars(container, top) {
  container.replaceChildren();
  for (const t of top) {
    const fill = el("div", { class: "fill" });
    fill.style.width = pct(t.probability);
    fill.style.background = colour(t.genre);
    container.append(el("div", { class: "bar" }, el("span", { class: "g", text: t.genre }),
                        el("div", { class: "track" }, fill), el("span", { class: "p", text: pct(t.probability) })));
  }
}

function genreLine(node, r) {
  const g = $(".genre", node), why = $(".why", node);
  const name = r.genre || (r.top && r.top[0].genre) || "";
  g.textContent = name;
  g.classList.toggle("unknown", name === "unknown");
  if (r.rejected) {
    why.textContent = r.reject_rule === "embedding_distance"
      ? `(unlike the training music: distance ${r.reject_score.toPrecision(3)} > ${r.reject_threshold.toPrecision(3)})`
      : `(top probability ${pct(r.top[0].probability)} < ${pct(r.reject_threshold)})`;
  } else if (why) why.textContent = "";
}

function drawTimeline(canvas, tl, now, duration) {
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 900, h = canvas.clientHeight || 180;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const rows = tl.rows;
  if (!rows.length) return;
  const end = Math.max(duration || 0, rows[rows.length - 1].end_s);
  const pad = 4, band = 14, plotH = h - band - 2 * pad;
  const x = (t) => pad + (w - 2 * pad) * t / end;
  const y = (p) => pad + plotH * (1 - p);
  ctx.strokeStyle = "#e3e6ec"; ctx.lineWidth = 1;
  for (const p of [0.25, 0.5, 0.75]) { ctx.beginPath(); ctx.moveTo(pad, y(p)); ctx.lineTo(w - pad, y(p)); ctx.stroke(); }
  // each row answers for the music from start_s to end_s (a window; for a track model up to 30 s
  // from start_s): drawn at its middle, and the band gives each stretch the genre of the nearest row
  const mid = rows.map((r) => (r.start_s + r.end_s) / 2);
  tl.labels.forEach((g, j) => {
    ctx.strokeStyle = colour(g); ctx.lineWidth = 2; ctx.beginPath();
    rows.forEach((r, i) => { const f = i ? "lineTo" : "moveTo"; ctx[f](x(mid[i]), y(r.probabilities[j])); });
    if (rows.length === 1) ctx.lineTo(x(rows[0].end_s), y(rows[0].probabilities[j]));
    ctx.stroke();
  });
  rows.forEach((r, i) => {
    const a = i ? (mid[i - 1] + mid[i]) / 2 : rows[0].start_s;
    const b = i < rows.length - 1 ? (mid[i] + mid[i + 1]) / 2 : rows[rows.length - 1].end_s;
    ctx.fillStyle = colour(r.genre);
    ctx.fillRect(x(a), h - pad - band, Math.max(1, x(b) - x(a)), band);
  });
  if (now != null) {
    ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5; ctx.beginPath();
    ctx.moveTo(x(now), pad); ctx.lineTo(x(now), h - pad); ctx.stroke();
  }
}

// -- files --------------------------------------------------------------------------------------

async function predictFile(file) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".name", node).textContent = file.name;
  $(".genre", node).textContent = "analysing…";
  $("#results").prepend(node);
  const audio = $("audio", node), canvas = $("canvas", node);
  audio.src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("file", file, file.name);
  const k = state.model ? state.model.labels.length : 10;
  const reject = $("#reject").checked ? "&reject=1" : "";
  let r;
  try {
    r = await api(`/v1/predict?timeline=1&top_k=${k}${reject}`, { method: "POST", body: form });
  } catch (e) {
    $(".genre", node).textContent = ""; $(".error", node).textContent = "the server did not answer: " + e; return;
  }
  const res = r.body && r.body.results ? r.body.results[0] : null;
  if (!r.ok || !res || res.error) {
    $(".genre", node).textContent = "";
    $(".error", node).textContent = (res && res.error) || (r.body && r.body.error) || `error ${r.status}`;
    canvas.hidden = true;
    audio.hidden = true;
    return;
  }
  genreLine(node, res);
  bars($(".bars", node), res.top);
  node.classList.add("done");
  const tl = res.timeline;
  const redraw = () => drawTimeline(canvas, tl, audio.currentTime, audio.duration);
  redraw();
  audio.addEventListener("timeupdate", redraw);
  audio.addEventListener("loadedmetadata", redraw);
  audio.addEventListener("seeked", redraw);
  canvas.addEventListener("click", (ev) => {
    const rect = canvas.getBoundingClientRect();
    const end = Math.max(audio.duration || 0, tl.rows.length ? tl.rows[tl.rows.length - 1].end_s : 0);
    if (end > 0) { audio.currentTime = end * (ev.clientX - rect.left - 4) / (rect.width - 8); audio.play(); }
  });
}

async function predictFiles(files) {
  for (const f of files) await predictFile(f);  // one at a time: the server's pool stays free for others
}

function setupDrop() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (ev) => { predictFiles([...ev.target.files]); ev.target.value = ""; });
  for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => predictFiles([...e.dataTransfer.files]));
}

// -- listen -------------------------------------------------------------------------------------

const live = { ws: null, ctx: null, stream: null };

async function startListening() {
  const m = state.model;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false,
                                                                      autoGainControl: false, channelCount: 1 } });
  let ctx;
  try { ctx = new AudioContext({ sampleRate: m.sample_rate }); } catch (e) { ctx = new AudioContext(); }
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream?top_k=${Math.min(5, m.labels.length)}` +
              ($("#reject").checked ? "&reject=1" : "");
  const ws = new WebSocket(url, state.token ? ["bearer." + state.token] : []);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({ sr: ctx.sampleRate }));
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "estimate") {
      $("#live").hidden = false;
      $("#live-time").textContent = `${msg.t_s.toFixed(1)} s heard, over the last ${msg.span_s.toFixed(1)} s`;
      if (msg.silent) { $("#live-genre").textContent = "silence"; $("#live-bars").replaceChildren(); return; }
      genreLine($("#live"), msg);
      bars($("#live-bars"), msg.top);
    } else if (msg.type === "error") say(msg.error);
  };
  ws.onclose = (ev) => { if (live.ws === ws) { say(ev.reason ? "stream closed: " + ev.reason : "stream closed"); stopListening(); } };
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "pcm-sender");
  node.port.onmessage = (ev) => { if (ws.readyState === WebSocket.OPEN) ws.send(ev.data); };
  source.connect(node);
  Object.assign(live, { ws, ctx, stream, node });
  $("#listen-toggle").textContent = "stop listening";
  $("#listen-toggle").classList.add("on");
}

function stopListening() {
  const { ws, ctx, stream } = live;
  live.ws = null;
  if (ws) ws.close();
  if (ctx) ctx.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  $("#listen-toggle").textContent = "start listening";
  $("#listen-toggle").classList.remove("on");
}

// -- library ------------------------------------------------------------------------------------

async function refreshLabels() {
  const r = await api("/v1/labels");
  if (!r.ok) return;
  state.labels = {};
  for (const l of r.body.labels) state.labels[l.path] = l.genre;
  $("#label-count").textContent = r.body.labels.length;
  document.querySelectorAll("#suggestions li").forEach((li) => markChosen(li));
}

function markChosen(li) {
  const g = state.labels[li.dataset.path] || li.dataset.adapted;
  li.querySelectorAll(".genre-buttons button").forEach((b) => b.classList.toggle("chosen", b.dataset.genre === g));
  $(".label-now", li).textContent = li.dataset.adapted ? `labelled ${g}, in the new run` : g ? `labelled ${g}` : "";
}

async function label(path, genre) {
  const r = await postJSON("/v1/label", { path, genre });
  if (!r.ok) { say(r.body.error); return; }
  say("");
  await refreshLabels();
}

async function play(path) {
  const r = await api("/v1/library/" + path.split("/").map(encodeURIComponent).join("/"));
  if (!r.ok) { say(r.body.error || "cannot play"); return; }
  const player = $("#library-player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(r.body);
  player.hidden = false;
  player.play();
}

async function suggestTracks() {
  const btn = $("#suggest");
  btn.disabled = true; say("analysing your library…");
  const r = await postJSON("/v1/suggest", { n: Number($("#suggest-n").value) || 10 });
  btn.disabled = false;
  if (!r.ok) { say(r.body.error); return; }
  say(r.body.notes.length ? r.body.notes.join("; ") : "");
  const list = $("#suggestions");
  list.replaceChildren();
  for (const s of r.body.suggestions) {
    const li = el("li", {}, el("strong", { text: s.path }), " ",
                  el("span", { class: "muted", text: `guess ${s.guess} ${pct(s.probability)} (margin ${s.margin.toFixed(2)})` }),
                  " ", el("span", { class: "label-now muted" }));
    li.dataset.path = s.path;
    const buttons = el("div", { class: "genre-buttons" });
    const playBtn = el("button", { type: "button", text: "▶ play", class: "play" });
    playBtn.addEventListener("click", () => play(s.path));
    buttons.append(playBtn);
    for (const g of state.model.labels) {
      const b = el("button", { type: "button", text: g });
      b.dataset.genre = g;
      b.addEventListener("click", () => label(s.path, state.labels[s.path] === g ? "" : g));
      buttons.append(b);
    }
    const other = el("input", { type: "text", placeholder: "new genre" });
    other.addEventListener("keydown", (e) => { if (e.key === "Enter" && other.value.trim()) label(s.path, other.value.trim()); });
    buttons.append(other);
    li.append(buttons);
    list.append(li);
    markChosen(li);
  }
}

async function adaptRun() {
  const btn = $("#adapt");
  btn.disabled = true; say("adapting: embedding your labelled tracks and refitting the head…");
  const r = await postJSON("/v1/adapt", {});
  btn.disabled = false;
  if (!r.ok) { say(r.body.error); return; }
  say("");
  const a = r.body.result, box = $("#adapt-result");
  const fmt = (v) => (v == null ? "—" : pct(v));
  const table = el("table", { class: "figures" },
    el("tr", {}, el("th", { text: "" }), el("th", { text: "before" }), el("th", { text: "after" })),
    el("tr", {}, el("td", { text: "run" }), el("td", { text: r.body.previous }), el("td", { text: r.body.run })),
    el("tr", {}, el("td", { text: "genres" }), el("td", { text: r.body.before.labels.join(", ") }),
       el("td", { text: r.body.after.labels.join(", ") })),
    el("tr", {}, el("td", { text: "your tracks right" }), el("td", { text: fmt(a.before_accuracy) }),
       el("td", { text: fmt(a.after_accuracy) + " (out of fold)" })));
  box.replaceChildren(el("h3", { text: `adapted: now serving ${r.body.run}` }), table,
    el("p", { class: "muted", text: `${Object.values(a.tracks_per_genre).reduce((x, y) => x + y, 0)} labelled tracks, ` +
      `each weighing ${a.weight.toPrecision(3)} run tracks; ${a.seconds.toFixed(1)} s` +
      (a.new_genres.length ? `; new genres: ${a.new_genres.join(", ")}` : "") }),
    ...a.notes.map((n) => el("p", { class: "muted", text: "note: " + n })));
  box.hidden = false;
  // the list was the old run's: its labels are in the new run now; suggest again to go on
  document.querySelectorAll("#suggestions li").forEach((li) => {
    if (state.labels[li.dataset.path]) li.dataset.adapted = state.labels[li.dataset.path];
  });
  document.querySelectorAll("#suggestions .genre-buttons button:not(.play), #suggestions input")
    .forEach((b) => { b.disabled = true; });
  box.append(el("p", { class: "muted", text: "the suggestions above were the previous run's: press suggest for the new run's" }));
  await loadModel();
}

// -- start --------------------------------------------------------------------------------------

function setup() {
  setupDrop();
  $("#listen-toggle").addEventListener("click", () => {
    if (live.ws) stopListening();
    else startListening().catch((e) => { say("cannot listen: " + e.message); stopListening(); });
  });
  $("#suggest").addEventListener("click", suggestTracks);
  $("#adapt").addEventListener("click", adaptRun);
  $("#token-save").addEventListener("click", () => {
    state.token = $("#token").value.trim();
    sessionStorage.setItem("genrekit-token", state.token);
    $("#token-box").hidden = true;
    loadModel();
  });
  if (!window.AudioWorkletNode || !navigator.mediaDevices) $("#listen-toggle").disabled = true;
  loadModel();
}
document.addEventListener("DOMContentLoaded", setup);
