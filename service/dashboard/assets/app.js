// Vega Gateway dashboard: one WatchStats stream over the Connect protocol,
// plotted with hand-drawn SVG. No dependencies; see the package doc of
// service/dashboard for why.
"use strict";

const KEY_STORE = "vega.adminKey";
const ADMIN = "/vega.v1.PerfAdminService/";
const POINTS = 120;            // two minutes at one snapshot a second
const BACKOFF_MIN = 1000, BACKOFF_MAX = 30000;
const COLORS = ["#2563eb", "#16a34a", "#9333ea", "#d97706", "#dc2626", "#0891b2", "#65a30d", "#db2777"];

const $ = (id) => document.getElementById(id);
const num = (v) => (v === undefined || v === null || v === "" ? 0 : Number(v)); // int64 arrive as strings
const secs = (d) => (d ? parseFloat(d) : 0);                                    // Durations arrive as "0.0031s"

// ---- state ----------------------------------------------------------------

let controller = null;   // AbortController of the open stream
let backoff = BACKOFF_MIN;
let retryTimer = null;
let prev = null;         // the previous snapshot, for rates
const series = {};       // name -> array of numbers (ring of POINTS)
const breakerSeen = {};  // key -> last state seen
const transitions = [];  // newest first

function push(name, value) {
  const s = series[name] || (series[name] = []);
  s.push(Number.isFinite(value) ? value : 0);
  if (s.length > POINTS) s.shift();
  return s;
}

// ---- key handling -----------------------------------------------------------

function key() { return sessionStorage.getItem(KEY_STORE) || ""; }

function askForKey(message) {
  stop();
  sessionStorage.removeItem(KEY_STORE);
  $("board").hidden = true;
  $("forget").hidden = true;
  $("keyform").hidden = false;
  $("key").value = "";
  $("key").focus();
  if (message) banner(message);
}

function banner(text, info) {
  const b = $("banner");
  if (!text) { b.hidden = true; return; }
  b.textContent = text;
  b.className = info ? "info" : "";
  b.hidden = false;
}

function setConn(state, text) {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = text;
}

// ---- the stream ---------------------------------------------------------------

// envelope frames one message: flags byte, 4-byte big-endian length, bytes.
function envelope(obj) {
  const body = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, 5);
  return out;
}

function stop() {
  if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  if (controller) { controller.abort(); controller = null; }
}

function scheduleRetry(why) {
  stop();
  setConn("retrying", "reconnecting in " + Math.round(backoff / 1000) + " s");
  banner("Stream ended (" + why + "); reconnecting in " + Math.round(backoff / 1000) + " s.", true);
  retryTimer = setTimeout(start, backoff);
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
}

// refused handles an end of stream or an HTTP error that a retry cannot
// mend: a wrong or missing key.
function refused(code, message) {
  const why = code === "permission_denied"
    ? "The gateway refused the key: " + (message || "permission denied") + "."
    : "Wrong admin key: the gateway answered unauthenticated. Enter the key set in VEGA_ADMIN_API_KEY.";
  setConn("stopped", "stopped");
  askForKey(why);
}

async function start() {
  stop();
  if (!key()) { askForKey(); return; }
  if (document.hidden) { setConn("idle", "paused (tab hidden)"); return; }
  const ctl = new AbortController();
  controller = ctl;
  setConn("retrying", "connecting");
  let resp;
  try {
    resp = await fetch(ADMIN + "WatchStats", {
      method: "POST",
      headers: {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "x-api-key": key(),
      },
      body: envelope({ interval: "1s" }),
      signal: ctl.signal,
      cache: "no-store",
    });
  } catch (e) {
    if (ctl.signal.aborted) return;
    scheduleRetry("network error");
    return;
  }
  if (!resp.ok) {
    let err = {};
    try { err = await resp.json(); } catch (e) { /* not a Connect error body */ }
    if (err.code === "unauthenticated" || err.code === "permission_denied") { refused(err.code, err.message); return; }
    scheduleRetry("HTTP " + resp.status);
    return;
  }
  await read(resp.body.getReader(), ctl);
}

// read cuts the byte stream into frames: a frame may straddle chunks, and
// a chunk may hold several frames.
async function read(reader, ctl) {
  let buf = new Uint8Array(0);
  const decoder = new TextDecoder();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (!ctl.signal.aborted) scheduleRetry("connection lost");
      return;
    }
    if (chunk.done) break;
    const joined = new Uint8Array(buf.length + chunk.value.length);
    joined.set(buf);
    joined.set(chunk.value, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const flags = buf[0];
      const len = new DataView(buf.buffer, buf.byteOffset + 1, 4).getUint32(0);
      if (buf.length < 5 + len) break;
      const msg = JSON.parse(decoder.decode(buf.subarray(5, 5 + len)));
      buf = buf.slice(5 + len);
      if (flags & 0x02) { end(msg, ctl); return; }
      if (controller !== ctl) return;
      backoff = BACKOFF_MIN;
      setConn("live", "live");
      banner("");
      try { update(msg.stats || {}); } catch (e) { console.warn("dashboard: could not draw a snapshot", e); }
    }
  }
  if (!ctl.signal.aborted) scheduleRetry(buf.length ? "truncated frame" : "closed by the server");
}

function end(msg, ctl) {
  if (ctl.signal.aborted) return;
  const err = msg.error;
  if (err && (err.code === "unauthenticated" || err.code === "permission_denied")) { refused(err.code, err.message); return; }
  scheduleRetry(err ? err.code + ": " + (err.message || "") : "stream finished");
}

document.addEventListener("visibilitychange", () => {
  if (!key()) return;
  if (document.hidden) { stop(); setConn("idle", "paused (tab hidden)"); } else { backoff = BACKOFF_MIN; start(); }
});
window.addEventListener("pagehide", stop);

// ---- admin actions --------------------------------------------------------------

let pending = null;

function confirmThen(text, action) {
  pending = action;
  $("confirm-text").textContent = text;
  $("confirm").hidden = false;
  $("confirm-yes").focus();
}

async function call(method, body) {
  const resp = await fetch(ADMIN + method, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", "x-api-key": key() },
    body: JSON.stringify(body),
  });
  const out = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    if (out.code === "unauthenticated") { refused(out.code, out.message); throw new Error("unauthenticated"); }
    throw new Error((out.code || "HTTP " + resp.status) + ": " + (out.message || ""));
  }
  return out;
}

function act(text, method, body, done) {
  confirmThen(text, async () => {
    try {
      const out = await call(method, body);
      banner(done(out), true);
    } catch (e) {
      banner(method + " failed: " + e.message);
    }
  });
}

function setBreaker(k, mode) {
  const words = { BREAKER_MODE_FORCE_OPEN: "force open", BREAKER_MODE_FORCE_CLOSED: "force closed", BREAKER_MODE_AUTO: "back to auto" };
  act("Set breaker " + k + " to " + words[mode] + "?", "SetBreakerMode", { key: k, mode: mode },
    (out) => "Breaker " + k + " is " + ((out.breaker || {}).state || "set") + " (" + ((out.breaker || {}).mode || words[mode]) + ").");
}

// ---- drawing ------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = document.createElementNS(tag === "svg" || tag === "polyline" || tag === "line" || tag === "text" || tag === "rect" ? SVG : "http://www.w3.org/1999/xhtml", tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

// chart draws lines [{name, values, color}] on a shared y axis from 0 to
// the largest value (or fixedMax), with the newest value in the legend.
function chart(id, lines, fmt, fixedMax) {
  const box = $(id);
  const W = 600, H = 110, P = 4;
  let max = fixedMax || 0;
  if (!fixedMax) for (const l of lines) for (const v of l.values) max = Math.max(max, v);
  if (max <= 0) max = 1;
  const svg = el("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
  svg.appendChild(el("line", { x1: 0, y1: H - P, x2: W, y2: H - P, stroke: "#e3e6eb" }));
  svg.appendChild(el("line", { x1: 0, y1: P, x2: W, y2: P, stroke: "#f0f1f4" }));
  lines.forEach((l, i) => {
    const color = l.color || COLORS[i % COLORS.length];
    const n = l.values.length;
    const pts = l.values.map((v, j) => {
      const x = W - (n - 1 - j) * (W / (POINTS - 1));
      const y = H - P - (v / max) * (H - 2 * P);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  });
  const legend = el("div", { class: "legend" });
  legend.appendChild(el("span", {}, "max " + fmt(max)));
  lines.forEach((l, i) => {
    const item = el("span", {});
    const sw = el("span", { class: "swatch" });
    sw.style.background = l.color || COLORS[i % COLORS.length];
    item.appendChild(sw);
    item.appendChild(document.createTextNode(l.name + " " + fmt(l.values.length ? l.values[l.values.length - 1] : 0)));
    legend.appendChild(item);
  });
  box.replaceChildren(svg, legend);
}

function figures(id, list) {
  $(id).replaceChildren(...list.map(([label, value, cls]) => {
    const f = el("div", { class: "figure" });
    const b = el("b", cls ? { class: cls } : {}, value);
    f.append(b, el("span", {}, label));
    return f;
  }));
}

function rows(tableId, list) {
  $(tableId).tBodies[0].replaceChildren(...list);
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

function button(text, onclick) {
  const b = el("button", { type: "button" }, text);
  b.addEventListener("click", onclick);
  return b;
}

const f0 = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(v % 1 ? 1 : 0));
const pct = (v) => (v * 100).toFixed(1) + " %";
const bytes = (v) => (v >= 1 << 30 ? (v / (1 << 30)).toFixed(1) + " GiB" : v >= 1 << 20 ? (v / (1 << 20)).toFixed(1) + " MiB" : v >= 1024 ? (v / 1024).toFixed(0) + " KiB" : v.toFixed(0) + " B");
const ms = (v) => (v >= 1000 ? (v / 1000).toFixed(1) + " s" : v.toFixed(v < 10 ? 2 : 0) + " ms");
const age = (t) => {
  if (!t) return "never";
  const s = (Date.now() - Date.parse(t)) / 1000;
  return s < 60 ? s.toFixed(0) + " s ago" : s < 3600 ? (s / 60).toFixed(0) + " min ago" : (s / 3600).toFixed(1) + " h ago";
};

// ---- one snapshot -----------------------------------------------------------------

function counters(s) {
  const backendCalls = (s.integrations?.backends || []).filter((b) => b.kind !== "notify").reduce((a, b) => a + num(b.calls), 0);
  return {
    t: Date.parse(s.time) / 1000,
    backend: backendCalls,
    cache: num(s.cache?.hits),
    stale: num(s.cache?.staleHits),
    coalesced: num(s.requestCoalescing?.coalesced),
    refused: (s.circuitBreakers?.breakers || []).reduce((a, b) => a + num(b.rejected), 0) + (s.rateLimiters?.limiters || []).reduce((a, l) => a + num(l.rejected), 0),
    coalesceable: num(s.requestCoalescing?.requests),
    lookups: num(s.cache?.hits) + num(s.cache?.staleHits) + num(s.cache?.misses),
    poolRequests: num(s.connectionPool?.requests),
    poolReused: num(s.connectionPool?.reusedRequests),
    delivered: Object.fromEntries(Object.entries(s.batch?.channels || {}).map(([k, c]) => [k, num(c.delivered)])),
  };
}

function update(s) {
  const now = counters(s);
  const last = prev || now;
  const dt = Math.max(now.t - last.t, 1e-3);
  const rate = (a, b) => (prev ? Math.max(a - b, 0) / dt : 0); // a counter reset reads as 0, not negative
  prev = now;
  $("uptime").textContent = "up " + Math.round(secs(s.uptime)) + " s";

  // Traffic and how it was served.
  const served = { backend: rate(now.backend, last.backend), cache: rate(now.cache, last.cache), coalesced: rate(now.coalesced, last.coalesced), stale: rate(now.stale, last.stale) };
  const total = served.backend + served.cache + served.coalesced + served.stale;
  const refusedRate = rate(now.refused, last.refused);
  push("total", total);
  for (const k in served) push(k, served[k]);
  push("refused", refusedRate);
  figures("fig-traffic", [["served/s", f0(total)], ["backend/s", f0(served.backend)], ["cache/s", f0(served.cache)], ["coalesced/s", f0(served.coalesced)], ["stale/s", f0(served.stale)],
    ["refused/s (breaker, limiter)", f0(refusedRate), refusedRate > 0 ? "yes" : ""]]);
  chart("chart-traffic", ["total", "backend", "cache", "coalesced", "stale", "refused"].map((n) => ({ name: n, values: series[n] })), f0);

  // Ratios over the last interval (since start in the figures).
  const dc = now.coalesceable - last.coalesceable, dl = now.lookups - last.lookups;
  push("coalesceRatio", dc > 0 ? (now.coalesced - last.coalesced) / dc : 0);
  push("hitRatio", dl > 0 ? (now.cache + now.stale - last.cache - last.stale) / dl : 0);
  figures("fig-ratios", [["coalesce rate since start", num(s.requestCoalescing?.coalesceRate).toFixed(1) + " %"], ["cache hit rate since start", num(s.cache?.cacheHitRate).toFixed(1) + " %"],
    ["in flight", String(num(s.requestCoalescing?.inFlightCount))], ["avg wait", ms(num(s.requestCoalescing?.avgWaitTimeMs))]]);
  chart("chart-ratios", [{ name: "coalesced", values: series.coalesceRatio }, { name: "cache hits", values: series.hitRatio }], pct, 1);

  figures("fig-cache", [["entries", String(num(s.cache?.entries))], ["size", bytes(num(s.cache?.bytes))], ["of", bytes(num(s.cache?.capacityBytes))], ["evictions", String(num(s.cache?.evictions))], ["purged", String(num(s.cache?.purged))]]);

  drawBreakers(s.circuitBreakers?.breakers || [], s.time);
  drawLimiters(s.rateLimiters?.limiters || []);

  // Connection reuse.
  const dr = now.poolRequests - last.poolRequests;
  push("reuse", dr > 0 ? (now.poolReused - last.poolReused) / dr : (series.reuse || []).slice(-1)[0] || 0);
  push("open", num(s.connectionPool?.totalConnections));
  figures("fig-pool", [["reuse since start", num(s.connectionPool?.reuseRate).toFixed(1) + " %"], ["open", String(num(s.connectionPool?.totalConnections))], ["active", String(num(s.connectionPool?.activeConnections))],
    ["idle", String(num(s.connectionPool?.idleConnections))], ["errors", pct(num(s.connectionPool?.errorRate) / 100)]]);
  chart("chart-pool", [{ name: "reuse (last interval)", values: series.reuse }], pct, 1);

  // Outbox per channel.
  const channels = Object.entries(s.batch?.channels || {}).sort(([a], [b]) => a.localeCompare(b));
  const lines = [];
  rows("outbox", channels.map(([name, c]) => {
    const d = rate(now.delivered[name] || 0, (last.delivered || {})[name] || 0);
    lines.push({ name: name + " queued", values: push("q:" + name, num(c.queueDepth)) });
    lines.push({ name: name + " delivered/s", values: push("d:" + name, d) });
    return row([name, String(num(c.queueDepth)), c.queueDepth > 0 ? ms(num(c.oldestPendingAgeMs)) : "–", f0(d), String(num(c.deadLetterDepth)),
      button("Redrive", () => act("Redrive the dead letters of " + name + "?", "RedriveNotifications", { channel: name }, (o) => num(o.redriven) + " notifications queued again on " + name + "."))]);
  }));
  if (!channels.length) rows("outbox", [row(["no channel configured (SLACK_WEBHOOK_URL, VEGA_WEBHOOK_URL)", "", "", "", "", ""])]);
  $("chart-outbox").hidden = !channels.length;
  if (channels.length) chart("chart-outbox", lines, f0);

  // Runtime and leaks.
  const rt = s.runtime || {};
  push("goroutines", num(rt.goroutines));
  push("heap", num(rt.heapAllocBytes));
  push("gcp99", secs(rt.gcPauseP99) * 1000);
  figures("fig-runtime", [["goroutines", String(num(rt.goroutines))], ["heap", bytes(num(rt.heapAllocBytes))], ["GC pause p99", ms(secs(rt.gcPauseP99) * 1000)], ["GC pause max", ms(secs(rt.gcPauseMax) * 1000)],
    ["sched latency p99", ms(secs(rt.schedLatencyP99) * 1000)], ["slow RPCs", String(num(rt.slowRpcs))]]);
  chart("chart-runtime", [{ name: "goroutines", values: series.goroutines }], f0);
  const lk = s.memoryLeaks || {};
  figures("fig-leaks", [["leak suspected", lk.suspected ? "yes" : "no", lk.suspected ? "yes" : ""], ["heap growth", bytes(Math.max(num(lk.heapGrowthBytesPerMinute), 0)) + "/min"],
    ["goroutine growth", f0(num(lk.goroutineGrowthPerMinute)) + "/min"], ["samples", String(num(lk.samples))], ["why", lk.reason || "–"]]);
  chart("chart-heap", [{ name: "heap", values: series.heap }], bytes);

  const keys = new Set([...(s.integrations?.backends || []).filter((b) => b.kind !== "notify").map((b) => b.name), ...(s.circuitBreakers?.breakers || []).map((b) => b.key)]);
  $("backend-keys").replaceChildren(...[...keys].sort().map((k) => el("option", { value: k })));
}

function drawBreakers(list, time) {
  for (const b of list) {
    const was = breakerSeen[b.key];
    if (was !== undefined && was !== b.state) {
      transitions.unshift(new Date(Date.parse(time)).toLocaleTimeString() + "  " + b.key + ": " + was + " → " + b.state + " (" + b.mode + ")");
      transitions.length = Math.min(transitions.length, 50);
    }
    breakerSeen[b.key] = b.state;
  }
  rows("breakers", list.slice().sort((a, b) => a.key.localeCompare(b.key)).map((b) => {
    const st = el("span", { class: "state state-" + b.state }, b.state);
    const force = el("span");
    force.append(button("open", () => setBreaker(b.key, "BREAKER_MODE_FORCE_OPEN")), button("closed", () => setBreaker(b.key, "BREAKER_MODE_FORCE_CLOSED")), button("auto", () => setBreaker(b.key, "BREAKER_MODE_AUTO")));
    const tr = row([b.key, st, b.mode, String(num(b.consecutiveFailures)), String(num(b.rejected)), String(num(b.stateChanges)), age(b.lastChange), force]);
    tr.dataset.breaker = b.key;
    tr.dataset.state = b.state;
    return tr;
  }));
  if (!list.length) rows("breakers", [row(["no breaker yet: one is made on a backend's first call", "", "", "", "", "", "", ""])]);
  $("transitions").replaceChildren(...(transitions.length ? transitions : ["none yet"]).map((t) => el("li", {}, t)));
}

function drawLimiters(list) {
  const lines = [], conc = [];
  rows("limiters", list.slice().sort((a, b) => a.key.localeCompare(b.key)).map((l) => {
    lines.push({ name: l.key, values: push("r:" + l.key, num(l.currentRate)) });
    if (num(l.concurrencyLimit) > 0) {
      conc.push({ name: l.key + " limit", values: push("cl:" + l.key, num(l.concurrencyLimit)) });
      conc.push({ name: l.key + " in flight", values: push("if:" + l.key, num(l.inFlight)) });
      conc.push({ name: l.key + " queued", values: push("ql:" + l.key, num(l.queueLength)) });
    }
    const standing = el("span", l.standing ? { class: "yes" } : {}, l.standing ? "yes" : "no");
    return row([l.key, f0(num(l.currentRate)) + " (" + f0(num(l.minRate)) + "–" + f0(num(l.maxRate)) + ")", num(l.concurrencyLimit) ? String(num(l.concurrencyLimit)) : "–",
      String(num(l.inFlight)), String(num(l.queueLength)), ms(num(l.queueDelayP50Ms)) + " / " + ms(num(l.queueDelayP99Ms)), standing,
      [l.shedDeadline, l.shedStanding, l.shedFull, l.shedRetryAfter].map(num).join(" / ") + "  (rejected " + num(l.rejected) + ")", String((l.tenants || []).length)]);
  }));
  if (!list.length) rows("limiters", [row(["no limiter yet: one is made on a backend's first call (the built-in sim is not limited)", "", "", "", "", "", "", "", ""])]);
  chart("chart-limiters", lines, f0);
  chart("chart-concurrency", conc, f0);
}

// ---- wiring ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("keyform").addEventListener("submit", (e) => {
    e.preventDefault();
    const k = $("key").value.trim();
    if (!k) return;
    sessionStorage.setItem(KEY_STORE, k);
    $("keyform").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = false;
    banner("");
    backoff = BACKOFF_MIN;
    start();
  });
  $("forget").addEventListener("click", () => { setConn("idle", "not connected"); askForKey("Key forgotten."); });
  $("confirm-yes").addEventListener("click", () => { $("confirm").hidden = true; const a = pending; pending = null; if (a) a(); });
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; pending = null; });
  $("purge").addEventListener("submit", (e) => {
    e.preventDefault();
    const prefix = $("purge-prefix").value.trim();
    act(prefix ? "Purge cached answers under " + prefix + "?" : "Purge the whole cache?", "PurgeCache", { prefix: prefix }, (o) => num(o.purged) + " cached answers purged.");
  });
  $("breaker-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setBreaker($("breaker-key").value.trim(), $("breaker-mode").value);
  });
  if (key()) {
    $("keyform").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = false;
    start();
  } else {
    askForKey();
  }
});
