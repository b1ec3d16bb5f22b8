// musicssl serve: the page. Plain JS, no libraries. Each dropped file is sent to
// POST /v1/key (with local windows) and POST /v1/beats; the browser decodes it
// itself (WebAudio) for the waveform and playback with a click on every beat.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const items = [];             // {file, card, key, beats, audio}
let keyNames = null;          // {labels: [24 probability labels], names: [24 names in the notation]}
let namesReady = null;        // the promise of keyNames for the current notation
let audioCtx = null;
let playing = null;           // {item, sources, start, raf}
const MAX_PARALLEL = 2;       // requests in flight from this page (the server queues the rest anyway)
let inFlight = 0;
const queue = [];

function notation() { return $("#notation").value; }

async function loadKeyNames() {
  const r = await fetch(`/v1/keys?notation=${notation()}`);
  keyNames = await r.json();
}

// ---------------------------------------------------------------- requests
function schedule(task) {
  return new Promise((resolve) => { queue.push({ task, resolve }); pump(); });
}
function pump() {
  while (inFlight < MAX_PARALLEL && queue.length) {
    const { task, resolve } = queue.shift();
    inFlight++;
    task().then(resolve, resolve).finally(() => { inFlight--; pump(); });
  }
}

async function post(endpoint, file, params) {
  const body = new FormData();
  body.append("file", file, file.name);
  const query = new URLSearchParams(params).toString();
  let response;
  try {
    response = await fetch(`${endpoint}${query ? "?" + query : ""}`, { method: "POST", body });
  } catch (e) {
    return { path: file.name, error: "NetworkError", message: String(e) };
  }
  let record;
  try { record = await response.json(); } catch (e) { record = null; }
  if (!record || typeof record !== "object") {
    record = { path: file.name, error: `HTTP ${response.status}`, message: response.statusText };
  } else if (!response.ok && !record.error) {
    record = { path: file.name, error: `HTTP ${response.status}`, message: JSON.stringify(record.detail || record) };
  }
  return record;
}

// ---------------------------------------------------------------- files
function addFiles(files) {
  for (const file of files) {
    const card = $("#card").content.firstElementChild.cloneNode(true);
    card.dataset.file = file.name;
    $(".name", card).textContent = file.name;
    $("#results").prepend(card);
    const item = { file, card, key: null, beats: null, audio: null };
    items.push(item);
    $(".playbtn", card).addEventListener("click", () => togglePlay(item));
    decodeForDisplay(item);
    analyse(item);
  }
}

async function analyse(item) {
  setState(item, "analysing…");
  await schedule(() => requestKey(item));
  await schedule(async () => {
    item.beats = await post("/v1/beats", item.file, {});
    renderBeats(item);
  });
  const failed = (item.key && item.key.error) || (item.beats && item.beats.error);
  setState(item, failed ? "error" : "done");
  $("#download-json").disabled = $("#download-csv").disabled = false;
}

async function requestKey(item) {
  const wanted = notation();
  const record = await post("/v1/key", item.file, { notation: wanted, local: "true" });
  await namesReady;
  if (wanted !== notation()) return;  // the notation changed meanwhile; a new request is on its way
  item.key = record;
  renderKey(item);
}

function setState(item, text) {
  item.card.dataset.state = text === "done" || text === "error" ? text : "busy";
  $(".state", item.card).textContent = text;
}

function showError(item, record) {
  const box = $(".error", item.card);
  const lines = new Set((box.dataset.lines || "").split("\n").filter(Boolean));
  lines.add(`${record.error}: ${record.message || ""}`);
  box.dataset.lines = [...lines].join("\n");
  box.textContent = [...lines].join(" · ");
  box.hidden = false;
}

// ---------------------------------------------------------------- key
function shortLabel(i) { return keyNames ? keyNames.names[i] : String(i); }

function renderKey(item) {
  const r = item.key, card = item.card, keyEl = $(".key", card);
  if (r.error) {
    keyEl.textContent = "—"; keyEl.dataset.key = ""; keyEl.classList.remove("nokey");
    showError(item, r);
    return;
  }
  const noKey = r.key === null || r.key === undefined || r.no_key === true;
  keyEl.classList.toggle("nokey", noKey);
  keyEl.textContent = noKey ? "no key" : r.key;
  keyEl.dataset.key = noKey ? "none" : r.key;
  $(".confidence", card).textContent =
    typeof r.confidence === "number" ? `confidence ${r.confidence.toFixed(3)} · ${r.duration} s` : "";
  drawBars($(".bars", card), r);
  drawKeygram($(".keygram", card), r);
}

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600, h = canvas.clientHeight || Number(canvas.getAttribute("height"));
  canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "10px system-ui, sans-serif";
  return [g, w, h];
}

function drawBars(canvas, record) {
  const [g, w, h] = fitCanvas(canvas);
  const probs = record.probabilities || {};
  const labels = keyNames ? keyNames.labels : Object.keys(probs);
  const values = labels.map((l) => probs[l] || 0);
  const best = values.indexOf(Math.max(...values));
  const noKey = record.key === null || record.no_key === true;
  const left = 4, bottom = 26, top = 16, gap = 10, bw = (w - left * 2 - gap) / 24;
  const x0 = (i) => left + i * bw + (i >= 12 ? gap : 0);
  g.strokeStyle = "#d9dee5";
  g.beginPath(); g.moveTo(left, h - bottom + 0.5); g.lineTo(w - left, h - bottom + 0.5); g.stroke();
  g.textAlign = "center";
  labels.forEach((label, i) => {
    const bh = values[i] * (h - bottom - top);
    g.fillStyle = i === best && !noKey ? "#1f6feb" : (i < 12 ? "#8fb3e8" : "#b6a3e0");
    g.fillRect(x0(i) + 1, h - bottom - bh, bw - 2, Math.max(bh, values[i] > 0 ? 1 : 0));
    g.fillStyle = "#555";
    // labels on two staggered rows so that long names (C#m, 10A) do not collide
    g.fillText(keyNames ? keyNames.short[i] : label, x0(i) + bw / 2, h - (i % 2 ? 3 : 14));
  });
  g.textAlign = "left";
  g.fillStyle = "#67707c";
  g.fillText(`highest ${values[best].toFixed(3)} (${labels[best]}) · left: major, right: minor · bar height = probability`,
             left, 11);
}

function drawKeygram(canvas, record) {
  const [g, w, h] = fitCanvas(canvas);
  const windows = record.local || [];
  if (!windows.length || !keyNames) {
    g.fillStyle = "#67707c"; g.fillText("no local windows", 8, 16); return;
  }
  const index = new Map(keyNames.names.map((n, i) => [n, i]));
  const rows = [...new Set(windows.filter((x) => x.key !== null).map((x) => index.get(x.key)))]
    .filter((i) => i !== undefined).sort((a, b) => a - b);
  const duration = Math.max(record.duration || 0, ...windows.map((x) => x.end));
  const left = 58, right = 8, top = 6, bottom = 18;
  const rowH = Math.min(22, (h - top - bottom) / Math.max(rows.length, 1));
  const xs = (t) => left + (t / duration) * (w - left - right);
  windows.forEach((x, k) => {
    const row = rows.indexOf(index.get(x.key));
    if (row < 0) return;
    // each window drawn over its hop (centre to next centre) so overlapping windows tile the time axis
    const centre = (x.start + x.end) / 2;
    const prev = k > 0 ? (windows[k - 1].start + windows[k - 1].end) / 2 : 0;
    const next = k + 1 < windows.length ? (windows[k + 1].start + windows[k + 1].end) / 2 : duration;
    const a = k > 0 ? (prev + centre) / 2 : 0, b = k + 1 < windows.length ? (centre + next) / 2 : duration;
    g.fillStyle = `rgba(31,111,235,${0.25 + 0.75 * Math.max(0, Math.min(1, x.confidence || 0))})`;
    g.fillRect(xs(a), top + row * rowH + 1, Math.max(1, xs(b) - xs(a) - 1), rowH - 2);
  });
  g.fillStyle = "#333";
  rows.forEach((i, row) => g.fillText(keyNames.names[i], 4, top + row * rowH + rowH / 2 + 3));
  g.fillStyle = "#67707c";
  for (let t = 0; t <= duration; t += niceStep(duration)) g.fillText(`${Math.round(t)}s`, xs(t) - 6, h - 5);
}

function niceStep(duration) {
  for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300]) if (duration / s <= 8) return s;
  return 600;
}

// ---------------------------------------------------------------- beats and waveform
async function decodeForDisplay(item) {
  try {
    audioCtx = audioCtx || new (window.AudioContext || window.webkitAudioContext)();
    const data = await item.file.arrayBuffer();
    item.audio = await audioCtx.decodeAudioData(data);
    $(".playbtn", item.card).disabled = false;
  } catch (e) {
    item.audio = null;  // the browser cannot decode this format: beats still shown on a time axis
  }
  drawWave(item);
}

function renderBeats(item) {
  const r = item.beats, card = item.card;
  if (r.error) { $(".tempo", card).textContent = "—"; showError(item, r); drawWave(item); return; }
  $(".tempo", card).textContent = r.tempo_bpm === null ? "no tempo" : `${r.tempo_bpm.toFixed(1)} BPM`;
  $(".nbeats", card).textContent = `${r.n_beats} beats (${r.tracker})`;
  drawWave(item);
}

function drawWave(item, playhead = null) {
  const canvas = $(".wave", item.card);
  const [g, w, h] = fitCanvas(canvas);
  const beats = item.beats && !item.beats.error ? item.beats.beats : [];
  const duration = item.audio ? item.audio.duration
    : (item.beats && item.beats.duration_s) || (item.key && item.key.duration) || 1;
  const xs = (t) => (t / duration) * w;
  if (item.audio) {
    const x = item.audio.getChannelData(0), step = Math.max(1, Math.floor(x.length / w));
    g.fillStyle = "#7d8796";
    for (let px = 0; px < w; px++) {
      let lo = 0, hi = 0;
      const s0 = px * step, s1 = Math.min(x.length, s0 + step);
      for (let s = s0; s < s1; s++) { const v = x[s]; if (v < lo) lo = v; if (v > hi) hi = v; }
      g.fillRect(px, h / 2 - hi * (h / 2 - 4), 1, Math.max(1, (hi - lo) * (h / 2 - 4)));
    }
  } else {
    g.fillStyle = "#67707c";
    g.fillText("(this browser cannot decode the file: no waveform or playback)", 8, 14);
  }
  g.strokeStyle = "rgba(209,36,47,0.75)";
  g.lineWidth = 1;
  for (const b of beats) { g.beginPath(); g.moveTo(xs(b) + 0.5, 0); g.lineTo(xs(b) + 0.5, h); g.stroke(); }
  if (playhead !== null) {
    g.strokeStyle = "#1f6feb"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(xs(playhead), 0); g.lineTo(xs(playhead), h); g.stroke();
  }
}

// ---------------------------------------------------------------- playback with a click track
function stop() {
  if (!playing) return;
  for (const s of playing.sources) { try { s.stop(); } catch (e) { /* already stopped */ } }
  cancelAnimationFrame(playing.raf);
  $(".playbtn", playing.item.card).textContent = "▶ Play";
  drawWave(playing.item);
  playing = null;
}

function togglePlay(item) {
  const same = playing && playing.item === item;
  stop();
  if (same || !item.audio) return;
  audioCtx.resume();
  const start = audioCtx.currentTime + 0.05;
  const music = audioCtx.createBufferSource();
  music.buffer = item.audio;
  music.connect(audioCtx.destination);
  music.start(start);
  const sources = [music];
  if ($(".click", item.card).checked && item.beats && !item.beats.error) {
    for (const b of item.beats.beats) {  // a 1 kHz blip of 30 ms on every beat
      const osc = audioCtx.createOscillator(), gain = audioCtx.createGain();
      osc.frequency.value = 1000;
      gain.gain.setValueAtTime(0.6, start + b);
      gain.gain.exponentialRampToValueAtTime(0.001, start + b + 0.03);
      osc.connect(gain).connect(audioCtx.destination);
      osc.start(start + b); osc.stop(start + b + 0.035);
      sources.push(osc);
    }
  }
  music.onended = () => { if (playing && playing.item === item) stop(); };
  playing = { item, sources, start, raf: 0 };
  $(".playbtn", item.card).textContent = "■ Stop";
  const tick = () => {
    if (!playing || playing.item !== item) return;
    drawWave(item, Math.max(0, audioCtx.currentTime - start));
    playing.raf = requestAnimationFrame(tick);
  };
  tick();
}

// ---------------------------------------------------------------- downloads
function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function downloadJSON() {
  const out = items.map((it) => ({ path: it.file.name, key: it.key, beats: it.beats }));
  download("musicssl.json", JSON.stringify(out, null, 2) + "\n", "application/json");
}

function downloadCSV() {
  const labels = keyNames ? keyNames.labels : [];
  const head = ["path", "key", "confidence", "duration", "tempo_bpm", "n_beats", "beats", "error", "message", ...labels];
  const rows = items.map((it) => {
    const k = it.key || {}, b = it.beats || {};
    const errors = [k, b].filter((r) => r.error);
    return [it.file.name, k.error ? "" : (k.key === null ? "no key" : k.key), k.confidence, k.duration,
      b.tempo_bpm, b.n_beats, (b.beats || []).map((t) => t.toFixed(3)).join(" "),
      errors.map((r) => r.error).join("; "), errors.map((r) => r.message).join("; "),
      ...labels.map((l) => (k.probabilities || {})[l])].map(csvCell).join(",");
  });
  download("musicssl.csv", [head.join(","), ...rows].join("\n") + "\n", "text/csv");
}

// ---------------------------------------------------------------- wiring
function setup() {
  const drop = $("#drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });
  // a file dropped next to the zone must not make the browser navigate away
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("#files").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  $("#example").addEventListener("click", async () => {
    const r = await fetch("/v1/example");
    const blob = await r.blob();
    addFiles([new File([blob], "ode_to_joy_d_major.ogg", { type: "audio/ogg" })]);
  });
  $("#notation").addEventListener("change", async () => {
    namesReady = loadKeyNames();
    await namesReady;
    for (const item of items) if (item.key && !item.key.error) schedule(() => requestKey(item));
  });
  $("#download-json").addEventListener("click", downloadJSON);
  $("#download-csv").addEventListener("click", downloadCSV);
  window.addEventListener("resize", () => items.forEach((it) => {
    drawWave(it); if (it.key && !it.key.error) { drawBars($(".bars", it.card), it.key); drawKeygram($(".keygram", it.card), it.key); }
  }));
  fetch("/v1/health").then((r) => r.json()).then((h) => {
    $("#server").textContent = `musicssl ${h.version} · key model ${h.key_model} · ` +
      `uploads up to ${(h.max_upload_bytes / 1e6).toFixed(0)} MB and ${h.max_duration_s} s of audio`;
  }).catch(() => {});
  namesReady = loadKeyNames();
}

setup();
