// The import page: upload (drag and drop or file input) → analyze → target →
// import with progress → verification; a failed import resumes from its
// saved offset.
"use strict";
const I = { path: null, jobId: null };

function target() {
  const c = { url: $("#url").value.trim() };
  if ($("#username").value) { c.username = $("#username").value; c.password = $("#password").value; }
  if ($("#tenant").value.trim()) c.tenant = $("#tenant").value.trim();
  return c;
}

function fail(e) { showMsg($("#msg"), "error", e.message || String(e)); }

const dz = $("#dropzone");
dz.onclick = e => { if (e.target.id !== "file") $("#file").click(); };
dz.addEventListener("dragover", e => { e.preventDefault(); dz.classList.add("over"); });
dz.addEventListener("dragleave", () => dz.classList.remove("over"));
dz.addEventListener("drop", e => { e.preventDefault(); dz.classList.remove("over"); if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
$("#file").onchange = () => { if ($("#file").files.length) upload($("#file").files[0]); };

function upload(file) {
  hideMsg($("#msg"));
  const fd = new FormData();
  fd.append("file", file, file.name);
  $("#upload-progress").classList.remove("hidden");
  $("#upload-state").textContent = `uploading ${file.name} (${bytes(file.size)})…`;
  // XMLHttpRequest: fetch() cannot report upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/upload");
  xhr.setRequestHeader("X-Spillway-CSRF", csrfToken());
  xhr.upload.onprogress = e => { if (e.lengthComputable) $("#upload-bar").style.width = (100 * e.loaded / e.total).toFixed(1) + "%"; };
  xhr.onload = async () => {
    let data = null;
    try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status !== 200) { $("#upload-state").textContent = ""; return fail(new Error((data && data.error) || xhr.statusText)); }
    $("#upload-bar").style.width = "100%";
    I.path = data.path;
    $("#upload-state").textContent = `${data.name}: ${bytes(data.bytes)} uploaded`;
    await analyze();
  };
  xhr.onerror = () => fail(new Error("the upload was interrupted"));
  xhr.send(fd);
}

async function analyze(withTarget) {
  try {
    const req = { path: I.path };
    if (withTarget) { req.connection = target(); req.shift_to_now = $("#shift").checked; }
    const a = await api("POST", "/api/analyze", req);
    const r = a.report;
    const md = r.metadata || {};
    const rows = [
      ["Range", when(a.from_ms) + " → " + when(a.to_ms)],
      ["Series", num(r.series)],
      ["Samples", num(r.samples)],
      ["Size (uncompressed)", bytes(r.bytes)],
      ["Metrics", (r.metric_names || []).slice(0, 8).join(", ") + (r.names_truncated || (r.metric_names || []).length > 8 ? ", …" : "")],
      ["Archive checksum", r.archive_checksum == null ? "no .sha256 file" : (r.archive_checksum ? "matches" : "MISMATCH")],
      ["Source", (md.source_flavour || "–") + " " + (md.source_version || "")],
      ["Obfuscated", md.obfuscated ? "yes" : "no"],
    ];
    if (a.retention_cutoff_ms != null) rows.push(["Target retention keeps", "points after " + when(a.retention_cutoff_ms)]);
    $("#analysis").innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
    $("#analyze-warnings").innerHTML = a.warnings.map(w => `<div class="msg warn">${esc(w)}</div>`).join("")
      || (withTarget ? `<div class="msg ok">Everything fits the target's retention.</div>` : "");
    $("#analyze-panel").classList.remove("hidden");
    $("#target-panel").classList.remove("hidden");
  } catch (e) { fail(e); }
}

$("#btn-check").onclick = () => analyze(true);

$("#btn-import").onclick = async e => {
  e.target.disabled = true;
  hideMsg($("#msg"));
  try {
    const st = await api("POST", "/api/import/start", { path: I.path, connection: target(), shift_to_now: $("#shift").checked });
    I.jobId = st.id;
    $("#progress-panel").classList.remove("hidden");
    render(st);
    poll();
  } catch (err) { fail(err); } finally { e.target.disabled = false; }
};

$("#btn-resume").onclick = async () => {
  hideMsg($("#msg"));
  try { render(await api("POST", "/api/import/resume", { id: I.jobId, connection: target() })); poll(); } catch (e) { fail(e); }
};

function render(st) {
  const badge = $("#import-state");
  badge.textContent = st.state;
  badge.className = "badge " + ({ done: "ok", failed: "bad", cancelled: "warn" }[st.state] || "");
  $("#import-stage").textContent = st.stage || "";
  $("#import-bar").style.width = st.percent.toFixed(1) + "%";
  $("#import-progress").textContent = `${st.percent.toFixed(0)} % · ${bytes(st.bytes_done)} of ${bytes(st.bytes_total)} · ${num(st.lines)} lines, ${num(st.samples)} samples`;
  $("#import-eta").textContent = `${duration(st.elapsed_seconds)} / ${st.state === "running" ? duration(st.eta_seconds) : "–"}`;
  $("#btn-resume").classList.toggle("hidden", st.state !== "failed");
  if (st.state === "failed") showMsg($("#msg"), "error", "The import stopped: " + st.error + "\nFix the target, then Resume: it continues from the saved offset.");
  const o = st.result;
  if (st.state === "done" && o) {
    const ok = o.verified === true;
    const text = o.verified == null ? "not verified" : `${num(o.series_found)} of ${num(o.series_expected)} series visible on the target`;
    $("#verify-result").innerHTML = `<div class="msg ${ok ? "ok" : "warn"}" id="verify-msg">Verification: ${esc(text)}${o.verify_note ? " · " + esc(o.verify_note) : ""}` +
      `\n${num(o.samples_sent)} samples sent in ${num(o.chunks)} chunks as ${esc(o.wire)}` +
      (o.json_chunks ? ` (${num(o.json_chunks)} as JSON lines; the first: ${esc(o.json_reason || "reason not recorded")})` : "") + (o.resumed_from ? `, resumed at byte ${num(o.resumed_from)}` : "") +
      (o.skipped_samples ? `; ${num(o.skipped_samples)} samples older than the retention skipped` : "") + `</div>`;
  }
}

async function poll() {
  const id = I.jobId;
  for (;;) {
    let st;
    try { st = await api("GET", "/api/import/status?id=" + encodeURIComponent(id)); } catch (e) { return fail(e); }
    render(st);
    if (st.state !== "running" && st.state !== "queued") return;
    await new Promise(r => setTimeout(r, 500));
  }
}

fillVersion();
