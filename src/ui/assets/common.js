// Helpers shared by the spillway pages: API calls with readable errors,
// formatting, and a hand-drawn SVG line chart (no libraries: works offline).
"use strict";
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

// The server's per-process CSRF token, put in this page's <head>; every
// request that changes something sends it back.
function csrfToken() {
  const m = document.querySelector('meta[name="spillway-csrf"]');
  return m ? m.content : "";
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== "GET") opts.headers["X-Spillway-CSRF"] = csrfToken();
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  let resp;
  try { resp = await fetch(path, opts); } catch (e) { throw new Error("cannot reach the spillway ui server: " + e.message); }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* plain text */ }
  if (!resp.ok) throw new Error((data && data.error) || text || resp.statusText);
  return data;
}

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v) + " " + u[i];
}
function duration(s) {
  if (s == null) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function when(ms) { return ms == null ? "–" : new Date(ms).toISOString().replace(".000Z", "Z"); }
function num(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
function showMsg(el, kind, text) { el.className = "msg " + kind; el.textContent = text; el.classList.remove("hidden"); }
function hideMsg(el) { el.classList.add("hidden"); el.textContent = ""; }
function labelsText(labels) {
  const entries = Object.entries(labels || {});
  const name = (labels || {}).__name__ || "";
  const rest = entries.filter(([k]) => k !== "__name__").map(([k, v]) => k + '="' + v + '"').join(", ");
  return name + "{" + rest + "}";
}

const PALETTE = ["#1f6fb2", "#e07b24", "#2e9e5b", "#b23a48", "#7a4fb2"];

// series: [{name, points: [[ts_ms, value], ...]}]; draws into an <svg>.
function drawChart(svg, series, legendEl) {
  const W = 900, H = 220, L = 56, R = 12, T = 12, B = 28;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const pts = series.flatMap(s => s.points);
  if (!pts.length) { svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#5d6b7e">no points in the range</text>`; return; }
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  let out = "";
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = sy(v);
    out += `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#e6ebf1"/>`;
    out += `<text x="${L - 6}" y="${y + 4}" text-anchor="end" font-size="11" fill="#5d6b7e">${esc(+v.toPrecision(4))}</text>`;
  }
  for (let i = 0; i <= 4; i++) {
    const t = x0 + (x1 - x0) * i / 4, x = sx(t);
    out += `<text x="${x}" y="${H - 8}" text-anchor="middle" font-size="11" fill="#5d6b7e">${new Date(t).toISOString().substr(11, 5)}</text>`;
  }
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    out += `<path d="${d}" fill="none" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="2" vector-effect="non-scaling-stroke"/>`;
  });
  svg.innerHTML = out;
  if (legendEl) legendEl.innerHTML = series.map((s, i) => `<span style="color:${PALETTE[i % PALETTE.length]}"><span style="color:var(--ink)" class="mono">${esc(s.name)}</span></span>`).join("");
}

// A tiny inline sparkline (for the run page): values only.
function sparkline(values) {
  const W = 120, H = 24;
  if (!values.length) return `<svg class="sparkline" viewBox="0 0 ${W} ${H}"></svg>`;
  const lo = Math.min(...values), hi = Math.max(...values) || 1;
  const d = values.map((v, i) => (i ? "L" : "M") + (i * W / Math.max(1, values.length - 1)).toFixed(1) + " " + (H - 2 - (v - lo) / ((hi - lo) || 1) * (H - 4)).toFixed(1)).join(" ");
  return `<svg class="sparkline" viewBox="0 0 ${W} ${H}"><path d="${d}" fill="none" stroke="#1f6fb2" stroke-width="1.5"/></svg>`;
}

async function fillVersion() {
  try { const c = await api("GET", "/api/config"); const v = $("#version"); if (v) v.textContent = "spillway " + c.version; return c; } catch (_) { return null; }
}
