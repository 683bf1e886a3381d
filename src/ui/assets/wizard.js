// The gather wizard: six steps, each a call to /api/*. State lives in this
// page only (credentials included); nothing is stored in the browser.
"use strict";
const W = { step: 1, jobId: null, discovery: null };

function go(step) {
  W.step = step;
  $$(".step").forEach(s => s.classList.toggle("hidden", s.id !== "step-" + step));
  $$("#steps li").forEach(li => {
    const n = +li.dataset.step;
    li.classList.toggle("current", n === step);
    li.classList.toggle("done", n < step);
  });
  hideMsg($("#msg"));
}

function connection() {
  const c = { url: $("#url").value.trim() };
  if ($("#username").value) { c.username = $("#username").value; c.password = $("#password").value; }
  if ($("#bearer").value) c.bearer_token = $("#bearer").value;
  if ($("#tenant").value.trim()) c.tenant = $("#tenant").value.trim();
  if ($("#insecure").checked) c.insecure_skip_verify = true;
  return c;
}

function range() {
  const since = $("#since").value;
  if (since !== "custom") return { since };
  const iso = id => { const v = $(id).value; return v ? new Date(v + "Z").toISOString() : undefined; };
  return { from: iso("#from"), to: iso("#to") };
}

function selection() {
  const jobs = $$("#jobs-table tbody input:checked").map(i => i.value);
  const selectors = $("#selector").value.split("\n").map(s => s.trim()).filter(Boolean);
  return Object.assign({ jobs, selectors }, range());
}

function obfuscation() {
  const drop = $("#drop-labels").value.split(",").map(s => s.trim()).filter(Boolean);
  return { ips: $("#obf-ips").checked, jobs: $("#obf-jobs").checked, drop_labels: drop };
}

async function busy(btn, fn) {
  btn.disabled = true;
  try { await fn(); } catch (e) { showMsg($("#msg"), "error", e.message); } finally { btn.disabled = false; }
}

$("#btn-validate").onclick = e => busy(e.target, async () => {
  const r = await api("POST", "/api/validate", { connection: connection() });
  const rows = [
    ["Server", r.url],
    ["Flavour", r.flavour + (r.backend ? " → " + r.backend : "")],
    ["Version", r.version || "unknown"],
    ["Tenant", r.tenant || "–"],
    ["Export API", r.export_api ? "available (/api/v1/export)" : "missing: query_range fallback"],
  ];
  $("#validate-result").innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  $("#validate-notes").innerHTML = (r.notes || []).map(n => `<div class="msg warn">${esc(n)}</div>`).join("")
    || `<div class="msg ok">Connected: ${esc(r.flavour)} ${esc(r.version || "")}</div>`;
  go(2);
});

$("#btn-to-select").onclick = () => { go(3); if (!W.discovery) $("#btn-discover").click(); };

$("#since").onchange = () => $$(".custom-range").forEach(d => d.classList.toggle("hidden", $("#since").value !== "custom"));

$("#btn-discover").onclick = e => busy(e.target, async () => {
  $("#discover-state").textContent = "discovering…";
  try {
    const d = await api("POST", "/api/discover", Object.assign({ connection: connection() }, range()));
    W.discovery = d;
    const tbody = $("#jobs-table tbody");
    tbody.innerHTML = d.jobs.map(j => `<tr><td><input type="checkbox" value="${esc(j.job)}"></td><td class="mono">${esc(j.job)}</td><td>${esc(j.component || "–")}</td><td>${num(j.instances)}</td><td>${num(j.series)}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">no jobs found in the range; use a custom selector</td></tr>`;
    $("#discover-state").textContent = `${d.components.length} component(s), ${d.jobs.length} job(s)` + (d.notes.length ? " · " + d.notes.join("; ") : "");
  } catch (err) { $("#discover-state").textContent = ""; throw err; }
});

async function preview() {
  $("#sample-state").textContent = "loading…";
  try {
    const r = await api("POST", "/api/sample", Object.assign({ connection: connection(), obfuscation: obfuscation(), limit: 20 }, selection()));
    $("#sample-table tbody").innerHTML = r.rows.map(s => `<tr><td class="mono">${esc(labelsText(s.labels))}</td><td>${esc(s.value)}</td><td>${esc(when(s.timestamp_ms))}</td></tr>`).join("")
      || `<tr><td colspan="3" class="muted">no series match in the last 5 minutes of the range</td></tr>`;
    drawChart($("#chart"), r.chart, $("#legend"));
    $("#sample-state").textContent = `${r.rows.length} series shown` + (r.notes.length ? " · " + r.notes.join("; ") : "");
  } catch (err) { $("#sample-state").textContent = ""; throw err; }
}

$("#btn-preview").onclick = e => busy(e.target, async () => {
  const s = selection();
  if (!s.jobs.length && !s.selectors.length && !confirm("No job or selector chosen: export every series?")) return;
  go(4);
  await preview();
});
$("#btn-refresh").onclick = e => busy(e.target, preview);

function exportRequest() {
  const req = Object.assign({ connection: connection(), obfuscation: obfuscation() }, selection());
  const step = +$("#step-seconds").value;
  if (step > 0) req.metric_step_seconds = step;
  return req;
}

$("#btn-export").onclick = e => busy(e.target, async () => {
  const st = await api("POST", "/api/export/start", exportRequest());
  W.jobId = st.id;
  go(5);
  render(st);
  poll();
});

function render(st) {
  const badge = $("#export-state");
  badge.textContent = st.state + (st.state === "queued" && st.queue_position ? " (#" + st.queue_position + " in line; 3 exports run at once)" : "");
  badge.className = "badge " + ({ done: "ok", failed: "bad", cancelled: "warn", running: "", queued: "" }[st.state] || "");
  $("#export-stage").textContent = st.stage ? st.stage : "";
  $("#export-bar").style.width = st.percent.toFixed(1) + "%";
  $("#export-progress").textContent = `${st.percent.toFixed(0)} % · window ${st.windows_done} of ${st.windows_total || "?"} · ${bytes(st.bytes)} staged`;
  $("#export-counts").textContent = `${num(st.lines)} / ${num(st.samples)}`;
  $("#export-eta").textContent = `${duration(st.elapsed_seconds)} / ${st.state === "running" ? duration(st.eta_seconds) : "–"}`;
  const finished = ["done", "failed", "cancelled"].includes(st.state);
  $("#btn-cancel").classList.toggle("hidden", finished);
  $("#btn-resume").classList.toggle("hidden", !(st.state === "failed" || st.state === "cancelled"));
  $("#btn-restart").classList.toggle("hidden", !finished || st.state === "done");
  if (st.state === "failed") showMsg($("#msg"), "error", "The export failed: " + st.error + "\nFix the cause, then Resume: finished windows are kept.");
  if (st.state === "cancelled") showMsg($("#msg"), "warn", "Export cancelled; partial files were removed. Resume continues from the windows already staged.");
  if (st.message && !finished) showMsg($("#msg"), "info", st.message);
}

async function poll() {
  const id = W.jobId;
  for (;;) {
    if (id !== W.jobId) return;
    let st;
    try { st = await api("GET", "/api/export/status?id=" + encodeURIComponent(id)); } catch (e) { showMsg($("#msg"), "error", e.message); return; }
    render(st);
    if (st.state === "done") { done(st); return; }
    if (st.state === "failed" || st.state === "cancelled") return;
    await new Promise(r => setTimeout(r, 500));
  }
}

function done(st) {
  const b = st.bundle;
  $("#bundle-name").textContent = b.name;
  $("#bundle-size").textContent = bytes(b.bytes) + " (" + num(b.bytes) + " bytes)";
  $("#bundle-sha").textContent = b.sha256;
  $("#bundle-range").textContent = when(st.from_ms) + " → " + when(st.to_ms);
  $("#bundle-lines").textContent = num(b.metrics_count);
  $("#download-link").href = b.download_url;
  $("#download-link").setAttribute("download", b.name);
  go(6);
}

$("#btn-cancel").onclick = e => busy(e.target, async () => {
  const st = await api("POST", "/api/export/cancel", { id: W.jobId });
  render(st);
});
$("#btn-resume").onclick = e => busy(e.target, async () => {
  const st = await api("POST", "/api/export/resume", { id: W.jobId, connection: connection() });
  hideMsg($("#msg"));
  render(st);
  poll();
});
$$("[data-back]").forEach(b => b.addEventListener("click", () => { W.jobId = null; go(+b.dataset.back); }));

fillVersion();
go(1);
