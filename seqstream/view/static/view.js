// seqstream view: polls the view server (no per-page state there) and draws with plain canvas.
// The page keeps at most `window` rows per series (the server's SEQSTREAM_VIEW_SAMPLES), so a
// page open for hours holds no more than one that just opened.
"use strict";

const POLL_MS = 250;     // entity rows: four times a second reads as continuous scrolling
const STATUS_MS = 1000;  // connection state and the entity list
const FLEET_MS = 2000;   // Prometheus scrapes every 5 s; the server caches its answer for 2 s

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let entity = params.get("entity");
let feature = Number(params.get("feature") || 0);
let windowRows = 3600;
let data = emptyData();

function emptyData() {
  return {
    cursors: { signal: 0, predictions: 0, beats: 0 },
    signal: { ts: [], values: [] },
    predictions: { ts: [], forecast_ts: [], forecast: [], score: [], anomaly: [] },
    beats: [],
    threshold: null, model_id: null, period: null,
  };
}

async function getJSON(url) {
  const reply = await fetch(url, { cache: "no-store" });
  if (!reply.ok) throw new Error(`${url}: HTTP ${reply.status}: ${await reply.text()}`);
  return reply.json();
}

function clock(ts) {
  if (ts === null || ts === undefined) return "–";
  if (ts >= 1e8) return new Date(ts * 1000).toISOString().slice(11, 23) + " UTC";
  return `${ts.toFixed(3)} s`;
}

function fmt(v, digits = 3) {
  return v === null || v === undefined ? "n/a" : Number(v).toPrecision(digits);
}

function showBanner(text) {
  const banner = $("banner");
  banner.hidden = !text;
  banner.textContent = text || "";
}

// ---- connection, entity list, fleet --------------------------------------------------------

function showStatus(s) {
  windowRows = s.window;
  const conn = $("conn");
  if (s.kafka === "connected") {
    const last = s.last_record_s_ago === null ? "no records yet"
      : `last record ${s.last_record_s_ago.toFixed(1)} s ago`;
    conn.textContent = `Kafka ${s.bootstrap}: connected (${last})`;
    conn.className = "conn ok";
    showBanner("");
  } else {
    conn.textContent = `Kafka ${s.bootstrap}: ${s.kafka}`;
    conn.className = "conn bad";
    showBanner(s.kafka === "unreachable"
      ? `Kafka is unreachable — ${s.error}. The view retries by itself every few seconds; ` +
        "what it showed before stays below."
      : `connecting to Kafka at ${s.bootstrap}…`);
  }
  conn.dataset.state = s.kafka;
  const list = $("entities");
  list.replaceChildren(...s.entities.map((e) => {
    const a = document.createElement("a");
    a.href = `?entity=${encodeURIComponent(e.entity_id)}`;
    a.className = e.entity_id === entity ? "chosen" : "";
    a.title = `last sample ${clock(e.last_ts)}; heard ${e.heard_s_ago} s ago`;
    const name = document.createElement("span");
    name.textContent = e.entity_id;
    const flags = document.createElement("span");
    flags.className = "flags";
    flags.textContent = e.flags ? `${e.flags} ⚑` : "";
    a.append(name, flags);
    a.addEventListener("click", (ev) => { ev.preventDefault(); choose(e.entity_id); });
    const li = document.createElement("li");
    li.append(a);
    return li;
  }));
  $("entities-note").hidden = s.entities.length > 0;
  if (!entity && s.entities.length) choose(s.entities[0].entity_id);
}

async function pollStatus() {
  try {
    showStatus(await getJSON("/api/status"));
  } catch (err) {
    $("conn").textContent = "view server: not answering";
    $("conn").className = "conn bad";
    showBanner(`The seqstream view server does not answer (${err.message}); is ` +
               "`seqstream view` still running?");
  }
  setTimeout(pollStatus, STATUS_MS);
}

async function pollFleet() {
  try {
    const f = await getJSON("/api/fleet");
    $("fleet-events").textContent = f.events_per_s === null ? "n/a" : f.events_per_s.toFixed(0);
    $("fleet-p99").textContent = f.latency_p99_s === null ? "n/a"
      : `${(f.latency_p99_s * 1000).toFixed(1)} ms`;
    $("fleet-anomalies").textContent = f.anomalies_per_min === null ? "n/a"
      : f.anomalies_per_min.toFixed(1);
    $("fleet-source").textContent = f.error ? f.error : `Prometheus ${f.source}, last minute`;
  } catch (err) {
    $("fleet-source").textContent = err.message;
  }
  setTimeout(pollFleet, FLEET_MS);
}

// ---- the chosen entity ---------------------------------------------------------------------

function choose(id) {
  entity = id;
  data = emptyData();
  history.replaceState(null, "", `?entity=${encodeURIComponent(id)}` +
                       (feature ? `&feature=${feature}` : ""));
  $("title").textContent = id;
  for (const a of document.querySelectorAll("#entities a")) {
    a.className = a.getAttribute("href") === `?entity=${encodeURIComponent(id)}` ? "chosen" : "";
  }
  draw();
}

function keepLast(obj, n) {
  for (const key of Object.keys(obj)) {
    if (obj[key].length > n) obj[key].splice(0, obj[key].length - n);
  }
}

function merge(d) {
  const c = data.cursors;
  // the server dropped and re-created this entity: its row numbers started again
  if (d.signal.next < c.signal || d.predictions.next < c.predictions || d.beats.next < c.beats) {
    data = emptyData();
    return;
  }
  data.signal.ts.push(...d.signal.ts);
  data.signal.values.push(...d.signal.values);
  for (const key of Object.keys(data.predictions)) data.predictions[key].push(...d.predictions[key]);
  data.beats.push(...d.beats.rows);
  keepLast(data.signal, windowRows);
  keepLast(data.predictions, windowRows);
  if (data.beats.length > windowRows) data.beats.splice(0, data.beats.length - windowRows);
  data.cursors = { signal: d.signal.next, predictions: d.predictions.next, beats: d.beats.next };
  data.threshold = d.threshold;
  data.model_id = d.model_id;
  data.period = d.period;
}

async function pollEntity() {
  if (entity) {
    const c = data.cursors;
    const asked = entity;
    try {
      const d = await getJSON(`/api/entity/${encodeURIComponent(entity)}?signal=${c.signal}` +
                              `&predictions=${c.predictions}&beats=${c.beats}`);
      if (asked === entity) {
        merge(d);
        draw();
      }
    } catch (err) {
      $("meta").textContent = err.message;
    }
  }
  setTimeout(pollEntity, POLL_MS);
}

// ---- drawing -------------------------------------------------------------------------------

function canvas(id) {
  const c = $(id);
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(300, c.clientWidth), h = Number(c.getAttribute("height"));
  if (c.width !== Math.round(w * ratio)) c.width = Math.round(w * ratio);
  c.height = Math.round(h * ratio);
  const ctx = c.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function nearest(ts, t) {  // index of the sample time closest to t (ts ascending)
  let lo = 0, hi = ts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ts[mid] < t) lo = mid + 1; else hi = mid;
  }
  return lo > 0 && Math.abs(ts[lo - 1] - t) < Math.abs(ts[lo] - t) ? lo - 1 : lo;
}

function axes(ctx, w, h, pad, t0, t1, y0, y1, unit) {
  ctx.strokeStyle = "#eee";
  ctx.fillStyle = "#777";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  const span = t1 - t0;
  const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 600, 1800, 3600]
    .find((s) => span / s <= 10) || 7200;
  for (let back = 0; back <= span; back += step) {
    const x = pad.l + ((t1 - back - t0) / span) * (w - pad.l - pad.r);
    ctx.beginPath(); ctx.moveTo(x, pad.t); ctx.lineTo(x, h - pad.b); ctx.stroke();
    if (back > 0 && x > w - pad.r - 110) continue;  // leave room for the clock at the right
    ctx.textAlign = back === 0 ? "right" : "center";
    ctx.fillText(back === 0 ? clock(t1) : `−${+back.toFixed(1)} s`, back === 0 ? x - 2 : x,
                 h - 4);
  }
  ctx.textAlign = "left";
  for (let k = 0; k <= 4; k++) {
    const v = y0 + (k / 4) * (y1 - y0);
    const y = h - pad.b - (k / 4) * (h - pad.t - pad.b);
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(`${fmt(v, 3)}${k === 4 ? ` ${unit}` : ""}`, 2, y + 4);
  }
}

function line(ctx, xs, ys, X, Y, color, width) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] === null || ys[i] === null || ys[i] === undefined) { pen = false; continue; }
    const x = X(xs[i]), y = Y(ys[i]);
    if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    pen = true;
  }
  ctx.stroke();
}

function draw() {
  const sig = data.signal, pred = data.predictions;
  const fcol = pred.forecast.map((row) => (row && row.length > feature ? row[feature] : null));
  const scol = sig.values.map((row) => (row.length > feature ? row[feature] : null));
  const flags = pred.anomaly.reduce((n, a) => n + (a ? 1 : 0), 0);
  const forecasts = pred.forecast_ts.reduce((n, t) => n + (t === null ? 0 : 1), 0);
  $("n-samples").textContent = sig.ts.length;
  $("n-forecasts").textContent = forecasts;
  $("n-flags").textContent = flags;
  $("n-beats").textContent = data.beats.length;
  $("meta").textContent = data.model_id === null && !sig.ts.length ? "waiting for records…"
    : `model ${(data.model_id || "?").slice(0, 12)} · threshold ${fmt(data.threshold)} · ` +
      `period ${data.period ? `${fmt(data.period * 1000, 4)} ms` : "n/a"} · ` +
      `window: the last ${windowRows} samples` + lag(sig, pred);
  const nFeatures = sig.values.length ? sig.values[sig.values.length - 1].length : 0;
  const select = $("feature");
  if (nFeatures > 1 && select.options.length !== nFeatures) {
    select.replaceChildren(...Array.from({ length: nFeatures }, (_, k) => new Option(`${k}`, k)));
    select.value = feature;
    $("feature-label").hidden = false;
  }
  drawSignal(sig, pred, scol, fcol);
  drawScore(pred);
  drawBeatTable();
}

function lag(sig, pred) {  // how far the predictions trail the signal (a busy worker)
  if (!sig.ts.length || !pred.ts.length) return "";
  return ` · predictions trail the signal by ${fmt(Math.max(0, sig.ts[sig.ts.length - 1] -
                                                  pred.ts[pred.ts.length - 1]), 2)} s`;
}

function timeRange(sig, pred) {
  const firsts = [sig.ts[0], pred.ts[0]].filter((t) => t !== undefined);
  const lasts = [sig.ts[sig.ts.length - 1], pred.forecast_ts[pred.forecast_ts.length - 1],
                 pred.ts[pred.ts.length - 1]].filter((t) => t !== undefined && t !== null);
  if (!firsts.length) return null;
  const t1 = Math.max(...lasts), t0 = Math.min(...firsts);
  return [t0, t1 > t0 ? t1 : t0 + 1];
}

function drawSignal(sig, pred, scol, fcol) {
  const { ctx, w, h } = canvas("signal");
  const range = timeRange(sig, pred);
  if (!range) return;
  const [t0, t1] = range;
  const ys = scol.concat(fcol).filter((v) => v !== null && Number.isFinite(v));
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
  const margin = 0.08 * (y1 - y0);
  y0 -= margin; y1 += margin;
  const pad = { l: 48, r: 8, t: 18, b: 18 };
  const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - ((v - y0) / (y1 - y0)) * (h - pad.t - pad.b);
  axes(ctx, w, h, pad, t0, t1, y0, y1, "");
  ctx.font = "bold 11px system-ui, sans-serif";
  for (const b of data.beats) {
    if (b.ts < t0 || b.ts > t1) continue;
    const abnormal = b.anomaly || (b.class && b.class !== "N");
    ctx.strokeStyle = abnormal ? "#e53935" : "#bdbdbd";
    ctx.lineWidth = abnormal ? 1.5 : 1;
    ctx.setLineDash(b.anomaly ? [] : [3, 3]);
    ctx.beginPath(); ctx.moveTo(X(b.ts), pad.t); ctx.lineTo(X(b.ts), h - pad.b); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = abnormal ? "#c62828" : "#757575";
    ctx.fillText(b.class || "?", X(b.ts) - 3, 12);
  }
  line(ctx, sig.ts, scol, X, Y, "#212121", 1.2);
  line(ctx, pred.forecast_ts, fcol, X, Y, "rgba(30, 136, 229, 0.85)", 1.2);
  ctx.fillStyle = "#e53935";
  for (let i = 0; i < pred.ts.length; i++) {
    if (!pred.anomaly[i] || pred.ts[i] < t0) continue;
    const j = sig.ts.length ? nearest(sig.ts, pred.ts[i]) : -1;
    const v = j >= 0 && Math.abs(sig.ts[j] - pred.ts[i]) < 1e-3 ? scol[j] : fcol[i];
    ctx.beginPath(); ctx.arc(X(pred.ts[i]), Y(v ?? y1), 3.5, 0, 2 * Math.PI); ctx.fill();
  }
}

function drawScore(pred) {
  const { ctx, w, h } = canvas("score");
  const range = timeRange(data.signal, pred);
  if (!range) return;
  const [t0, t1] = range;
  const scores = pred.score.filter((s) => s !== null);
  const top = Math.max(data.threshold === null ? 0 : data.threshold * 1.5, ...scores, 1e-9);
  const pad = { l: 48, r: 8, t: 8, b: 18 };
  const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - (Math.min(v, top) / top) * (h - pad.t - pad.b);
  axes(ctx, w, h, pad, t0, t1, 0, top, "score");
  line(ctx, pred.ts, pred.score, X, Y, "#6a1b9a", 1);
  if (data.threshold !== null) {
    ctx.strokeStyle = "#e53935";
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(pad.l, Y(data.threshold)); ctx.lineTo(w - pad.r, Y(data.threshold));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.fillStyle = "#e53935";
  for (let i = 0; i < pred.ts.length; i++) {
    if (pred.anomaly[i] && pred.score[i] !== null) {
      ctx.beginPath(); ctx.arc(X(pred.ts[i]), Y(pred.score[i]), 2.5, 0, 2 * Math.PI); ctx.fill();
    }
  }
}

function drawBeatTable() {
  const rows = data.beats.slice(-12).reverse().map((b) => {
    const tr = document.createElement("tr");
    tr.className = b.anomaly ? "abnormal" : "";
    for (const text of [clock(b.ts), b.class ?? "?", fmt(b.rr), fmt(b.p_abnormal, 2),
                        b.anomaly ? "⚑" : ""]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  document.querySelector("#beats tbody").replaceChildren(...rows);
}

$("feature").addEventListener("change", (ev) => {
  feature = Number(ev.target.value);
  history.replaceState(null, "", `?entity=${encodeURIComponent(entity)}&feature=${feature}`);
  draw();
});
if (entity) choose(entity);
pollStatus();
pollFleet();
pollEntity();
