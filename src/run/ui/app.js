// The web page of `spillway run`: reads /api/v1/rules,
// /api/v1/destinations and /api/v1/captures every few seconds and draws
// them; a capture's row draws a chart of its series. No framework, no
// network access beyond this server.
"use strict";

const REFRESH_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text || "none") }, text || "-");
}

function ago(rfc3339) {
  if (!rfc3339 || rfc3339.startsWith("0001-")) return "never";
  const s = Math.round((Date.now() - Date.parse(rfc3339)) / 1000);
  if (s < 0) return "now";
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function num(n) {
  return (n === undefined || n === null) ? "-" : Number(n).toLocaleString();
}

// A sparkline of the series each evaluation returned, oldest on the left.
function sparkline(updates) {
  const values = (updates || []).slice().reverse().map(u => u.samples || 0);
  const w = 120, h = 22;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  if (values.length === 0) return svg;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? (w - 2) / (values.length - 1) : 0;
  const points = values.map((v, i) =>
    (1 + i * step).toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1)).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.length > 1 ? points : points + " " + (w - 1) + "," + points.split(",")[1]);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = "series returned per evaluation (last " + values.length + "): " + values.join(", ");
  svg.append(title, line);
  return svg;
}

function drawDestinations(list) {
  const body = document.querySelector("#destinations tbody");
  body.replaceChildren();
  if (list.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no destinations")));
  }
  for (const d of list) {
    const dropped = Object.values(d.samples_dropped || {}).reduce((a, b) => a + b, 0);
    const droppedTitle = Object.entries(d.samples_dropped || {}).map(([k, v]) => k + ": " + v).join(", ");
    body.append(el("tr", {},
      el("td", {}, d.name),
      el("td", {}, d.type),
      el("td", {}, el("code", {}, d.url)),
      el("td", { class: "num" }, num(d.pending_samples)),
      el("td", { class: "num" }, num(d.pending_bytes)),
      el("td", { class: "num" }, num(d.samples_sent)),
      el("td", { class: "num", title: droppedTitle }, num(dropped)),
      el("td", { class: "error" }, d.last_error ? d.last_error + " (" + ago(d.last_error_time) + ")" : "")));
  }
}

function drawGroups(groups) {
  const root = document.getElementById("groups");
  root.replaceChildren();
  if (groups.length === 0) {
    root.append(el("p", { class: "muted" }, "no rule groups (rule_files is empty)"));
  }
  for (const g of groups) {
    root.append(el("h3", {}, g.name, " ",
      el("small", {}, g.type + " · every " + g.interval + " s · " + g.file + " · last evaluation " + ago(g.lastEvaluation))));
    const table = el("table", {},
      el("thead", {}, el("tr", {},
        el("th", {}, "rule"), el("th", {}, "state"), el("th", {}, "health"),
        el("th", {}, "last evaluation"), el("th", { class: "num" }, "last samples"),
        el("th", {}, "recent results"), el("th", {}, "last error"))));
    const body = el("tbody");
    for (const r of g.rules) {
      const state = r.type === "alerting" ? badge(r.state) : badge("recording", "none");
      body.append(el("tr", {},
        el("td", {}, el("div", {}, r.name), el("code", { class: "muted" }, r.query)),
        el("td", {}, state),
        el("td", {}, badge(r.health, r.health === "ok" ? "ok" : "err")),
        el("td", {}, ago(r.lastEvaluation)),
        el("td", { class: "num" }, num(r.lastSamples)),
        el("td", {}, sparkline(r.updates)),
        el("td", { class: "error" }, r.lastError || "")));
    }
    table.append(body);
    root.append(table);
  }
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
let pickedCapture = null;

function shortTime(rfc3339) {
  return rfc3339 ? new Date(Date.parse(rfc3339)).toLocaleString() : "…";
}

function drawCaptures(data) {
  const section = document.getElementById("captures-section");
  const list = data.captures || [];
  section.hidden = (data.configured || []).length === 0 && list.length === 0;
  if (section.hidden) return;
  const src = data.source || {};
  document.getElementById("captures-source").textContent =
    "raw samples read with " + (src.method || "(not read yet)") + (src.note ? " · " + src.note : "");
  const body = document.querySelector("#captures tbody");
  body.replaceChildren();
  if (list.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no captures yet: one opens when a matching series starts breaching")));
  }
  for (const c of list) {
    const id = c.key + "|" + c.from;
    const row = el("tr", { class: "pick" + (pickedCapture === id ? " picked" : ""), title: "show a chart of the captured series" },
      el("td", {}, c.name),
      el("td", {}, el("code", {}, (c.selectors || []).join(" "))),
      el("td", {}, badge(c.state)),
      el("td", {}, el("code", { class: "muted" }, (c.breaching || []).join(", "))),
      el("td", {}, shortTime(c.from) + " → " + (c.to ? shortTime(c.to) : "(breaching)")),
      el("td", { class: "num" }, num(c.series)),
      el("td", { class: "num" }, num(c.samples)),
      el("td", {}, (c.truncated || []).join(", ")),
      el("td", { class: "error" }, c.last_error || ""));
    row.addEventListener("click", () => { pickedCapture = id; drawChart(c.key); });
    body.append(row);
  }
}

async function drawChart(key) {
  const box = document.getElementById("capture-chart");
  box.hidden = false;
  box.replaceChildren(el("p", { class: "muted" }, "loading the captured series…"));
  let data;
  try {
    data = (await getJSON("api/v1/captures/chart?key=" + encodeURIComponent(key))).data;
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, "cannot load the chart: " + e.message));
    return;
  }
  const series = data.series || [];
  const points = series.flatMap(s => s.points);
  if (points.length === 0) {
    box.replaceChildren(el("p", { class: "muted" }, "no samples in " + shortTime(data.from) + " → " + shortTime(data.to)));
    return;
  }
  const w = 1000, h = 220, pad = 30;
  const t0 = Math.min(...points.map(p => p[0])), t1 = Math.max(...points.map(p => p[0]));
  const v0 = Math.min(...points.map(p => p[1])), v1 = Math.max(...points.map(p => p[1]));
  const x = t => pad + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (w - 2 * pad);
  const y = v => h - pad + (v1 > v0 ? -(v - v0) / (v1 - v0) : -0.5) * (h - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("preserveAspectRatio", "none");
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", s.points.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "));
    line.setAttribute("stroke", COLORS[i % COLORS.length]);
    svg.append(line);
    legend.append(el("span", { style: "color:" + COLORS[i % COLORS.length] }, s.labels));
  });
  for (const [text, tx, ty] of [[String(+v1.toPrecision(4)), 2, pad], [String(+v0.toPrecision(4)), 2, h - pad],
    [new Date(t0).toLocaleTimeString(), pad, h - 8], [new Date(t1).toLocaleTimeString(), w - pad - 60, h - 8]]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", tx);
    t.setAttribute("y", ty);
    t.textContent = text;
    svg.append(t);
  }
  box.replaceChildren(el("p", { class: "muted" }, "first " + series.length + " series of the capture, read back from the source at about 200 points"), svg, legend);
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [rules, dests, caps] = await Promise.all([getJSON("api/v1/rules"), getJSON("api/v1/destinations"), getJSON("api/v1/captures")]);
    drawGroups(rules.data.groups || []);
    drawDestinations(dests.data.destinations || []);
    drawCaptures(caps.data || {});
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "cannot reach spillway: " + e.message;
  }
}

async function reload() {
  const msg = document.getElementById("message");
  try {
    // The server's per-process CSRF token, put in this page's <head>.
    const meta = document.querySelector('meta[name="spillway-csrf"]');
    const resp = await fetch("-/reload", { method: "POST", headers: { "X-Spillway-CSRF": meta ? meta.content : "" } });
    msg.textContent = await resp.text();
    msg.className = "message" + (resp.ok ? "" : " failed");
  } catch (e) {
    msg.textContent = "reload failed: " + e.message;
    msg.className = "message failed";
  }
  msg.hidden = false;
  refresh();
}

document.getElementById("reload").addEventListener("click", reload);
refresh();
setInterval(refresh, REFRESH_MS);
