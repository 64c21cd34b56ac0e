// cortexcast live display: newest-frame-only drawing from the /ws WebSocket.
// Binary message: uint32 LE n | n bytes JSON header | stimulus plane | reconstruction plane
// (each h*w uint8). Text message: {"type": "status", ...} (same JSON as /api/stats).
"use strict";

const $ = (id) => document.getElementById(id);
const canvases = { stim: $("stim"), recon: $("recon") };
const ctx = { stim: canvases.stim.getContext("2d"), recon: canvases.recon.getContext("2d") };
const decoder = new TextDecoder();
let pending = null;        // newest undrawn frame (ArrayBuffer); older ones are dropped
let drawScheduled = false;
let scale = 8;
let shape = [36, 64];
let drawn = 0;             // frames drawn, for the fps readout
let fpsMark = null;
let retryMs = 250;

function fmt(x, digits = 2) {
  return x === null || x === undefined || !isFinite(x) ? "–" : Number(x).toFixed(digits);
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
function setText(id, text) { const el = $(id); if (el.textContent !== String(text)) el.textContent = text; }

function resize(h, w) {
  if (h === shape[0] && w === shape[1] && canvases.stim.width === w) return;
  shape = [h, w];
  for (const c of Object.values(canvases)) { c.width = w; c.height = h; c.style.aspectRatio = `${w} / ${h}`; }
  document.documentElement.style.setProperty("--view-w", `${w * scale}px`);
}

function paint(name, plane, h, w, present) {
  const img = ctx[name].createImageData(w, h);
  const d = img.data;
  for (let i = 0, j = 0; i < plane.length; i++, j += 4) {
    const v = present ? plane[i] : 0;
    d[j] = v; d[j + 1] = v; d[j + 2] = v; d[j + 3] = 255;
  }
  ctx[name].putImageData(img, 0, 0);
}

function draw() {
  drawScheduled = false;
  const buf = pending;
  pending = null;
  if (!buf) return;
  const n = new DataView(buf).getUint32(0, true);
  const hdr = JSON.parse(decoder.decode(new Uint8Array(buf, 4, n)));
  const h = hdr.h, w = hdr.w, size = h * w;
  resize(h, w);
  paint("stim", new Uint8Array(buf, 4 + n, size), h, w, hdr.has_stim);
  paint("recon", new Uint8Array(buf, 4 + n + size, size), h, w, hdr.has_recon);
  setText("stim-label", hdr.has_stim ? `frame ${hdr.stim_frame}` : "no stimulus");
  if (!hdr.has_recon) {
    setText("recon-label", "waiting for decoder");
  } else {
    const parts = [`of frame ${hdr.recon_stim_frame}`];
    if (hdr.imaging_frame !== null) parts.push(`imaging ${hdr.imaging_frame}`);
    if (hdr.lag !== null) parts.push(`lag ${hdr.lag}`);
    if (!hdr.paired) parts.push("unpaired");
    setText("recon-label", parts.join(" · "));
  }
  drawn++;
}

function onFrame(buf) {
  pending = buf;  // replaces any frame not drawn yet
  if (!drawScheduled) { drawScheduled = true; requestAnimationFrame(draw); }
}

function pill(id, state) {
  const el = $(id);
  el.classList.toggle("ok", state === true);
  el.classList.toggle("bad", state === false);
}

function onStatus(s) {
  if (s.settings && s.settings.scale && s.settings.scale !== scale) {
    scale = s.settings.scale;
    document.documentElement.style.setProperty("--view-w", `${shape[1] * scale}px`);
  }
  const alive = (src) => (src in s.producers ? s.producers[src] < 2.0 : false);
  pill("p-daq", alive("daq"));
  pill("p-decoder", alive("decoder"));

  const r = s.correlation;
  setText("corr", r === null ? "–" : fmt(r, 3));
  $("corr").classList.toggle("good", r !== null && r > 0.2);
  setText("corr-sub", s.correlation_error ? "unavailable" : s.correlation_frames ?
    `r over the last ${s.correlation_frames} paired frames` : "waiting for pairs");

  const e2e = s.latency_ms.end_to_end;
  setText("e2e-p50", fmt(e2e && e2e.p50));
  setText("e2e-p99", fmt(e2e && e2e.p99));
  setText("e2e-max", fmt(e2e && e2e.max));

  setText("shown", s.shown);
  setText("rx-stim", s.received.stimulus);
  setText("rx-recon", s.received.reconstruction);
  setText("skipped", s.skipped);
  setText("drops", s.dropped);
  $("drops").classList.toggle("bad", s.dropped > 0);
  setText("bad", Object.values(s.bad).reduce((a, b) => a + b, 0));
  setText("unpaired", s.unpaired);

  const rows = Object.entries(s.latency_ms).map(([name, v]) => {
    const e2eRow = name === "end_to_end";
    const label = e2eRow ? `end to end (${s.end_to_end_span})` : name;
    return `<tr${e2eRow ? ' class="e2e"' : ""}><td>${esc(label)}</td><td>${fmt(v.p50)}</td>` +
      `<td>${fmt(v.p99)}</td><td>${fmt(v.max)}</td><td>${esc(v.n)}</td></tr>`;
  });
  const body = rows.length ? rows.join("") :
    '<tr><td colspan="5" class="muted">no reconstructions yet</td></tr>';
  if ($("stage-rows").innerHTML !== body) $("stage-rows").innerHTML = body;

  const now = performance.now();
  if (fpsMark === null || now - fpsMark.t >= 1000) {
    if (fpsMark !== null) setText("fps", `${fmt((drawn - fpsMark.n) * 1000 / (now - fpsMark.t), 0)} fps drawn`);
    fpsMark = { t: now, n: drawn };
  }
  setText("uptime", `up ${fmt(s.uptime_s, 0)} s`);
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { retryMs = 250; setText("link", "live"); pill("p-link", true); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "status") onStatus(msg);
    } else {
      onFrame(ev.data);
    }
  };
  ws.onclose = () => {
    setText("link", "reconnecting");
    pill("p-link", false);
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 4000);
  };
}

// The server answered ?token= with an HttpOnly cookie that /ws now carries: take the
// token out of the address bar (and so out of screenshots and shared screens).
if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", location.pathname + location.hash);
}
$("smooth").addEventListener("change", (e) => document.body.classList.toggle("smooth", e.target.checked));
connect();
