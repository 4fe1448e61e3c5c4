// lmforge web UI: one page, five tabs, all state from the server's JSON API (webui/app.py).
"use strict";

const MAIN_KEYS = ["output_dir", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
  "gradient_accumulation_steps", "cutoff_len", "lora_rank", "logging_steps", "save_steps"];
const $ = (id) => document.getElementById(id);
let schemaKeys = {};
let currentRun = null;
let chatHistory = [];

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, body };
}
const post = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify(data) });

// -- tabs ---------------------------------------------------------------------------------------------
document.querySelectorAll("#tabs button").forEach((button) => button.addEventListener("click", () => {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b === button));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === button.dataset.tab));
}));
function showTab(name) { document.querySelector(`#tabs button[data-tab=${name}]`).click(); }

// -- the form -----------------------------------------------------------------------------------------
function field(key, help, placeholder) {
  const div = document.createElement("div");
  div.className = "field";
  div.innerHTML = `<label for="f-${key}" title=""></label><input id="f-${key}" data-key="${key}">` +
    `<span class="err" id="err-${key}"></span>`;
  div.querySelector("label").textContent = key;
  div.querySelector("label").title = help || "";
  div.querySelector("input").placeholder = placeholder || "";
  div.querySelector("input").title = help || "";
  return div;
}

async function buildForm() {
  const { body } = await api("/api/schema");
  const groups = $("all-groups");
  for (const group of body.groups) {
    const box = document.createElement("details");
    box.innerHTML = "<summary></summary>";
    box.querySelector("summary").textContent = group.title;
    for (const key of group.keys) {
      schemaKeys[key.name] = key;
      if (document.getElementById(`f-${key.name}`) || MAIN_KEYS.includes(key.name)) continue;
      box.appendChild(field(key.name, `${key.type} = ${key.default}. ${key.help}`, key.default));
    }
    groups.appendChild(box);
  }
  for (const name of MAIN_KEYS) {
    const key = schemaKeys[name] || { type: "", default: "", help: "" };
    $("main-keys").appendChild(field(name, `${key.type} = ${key.default}. ${key.help}`, key.default));
  }
  $("f-output_dir").value = "run-1";
  $("f-max_steps").value = "";
  document.querySelectorAll("[data-key]").forEach((input) => input.addEventListener("input", changed));
  document.querySelectorAll("select[data-key]").forEach((input) => input.addEventListener("change", changed));
  $("f-model_name_or_path").addEventListener("change", detectTemplate);
  $("f-dataset_dir").addEventListener("change", listDatasets);
  await listDatasets();
  await detectTemplate();
}

function values() {
  const out = {};
  document.querySelectorAll("[data-key]").forEach((input) => {
    const value = input.value.trim();
    if (value !== "") out[input.dataset.key] = value;
  });
  return out;
}

function setValues(data) {
  for (const [key, value] of Object.entries(data)) {
    let input = document.getElementById(`f-${key}`);
    if (input && input.tagName === "SELECT" && ![...input.options].some((o) => o.value === String(value))) {
      input.add(new Option(String(value), String(value)));
    }
    if (input) input.value = typeof value === "object" ? JSON.stringify(value) : String(value);
  }
  changed();
}

let pending = null;
function changed() {
  clearTimeout(pending);
  pending = setTimeout(validate, 200);
}

async function validate() {
  const { body } = await post("/api/validate", values());
  document.querySelectorAll(".err[id^=err-]").forEach((span) => { span.textContent = ""; });
  for (const [key, message] of Object.entries(body.errors || {})) {
    let span = document.getElementById(`err-${key}`);
    if (!span) {  // a key typed into no field of its own (loaded from a file): shown with the general ones
      $("general").textContent += message + "\n";
      continue;
    }
    span.textContent = message;
    const details = span.closest("details");
    if (details) details.open = true;
  }
  $("general").textContent = (body.general || []).join("\n");
  $("yaml").textContent = body.yaml || "";
  return body;
}

async function listDatasets() {
  const { body } = await api(`/api/datasets?dataset_dir=${encodeURIComponent($("f-dataset_dir").value)}`);
  const select = $("f-dataset");
  select.innerHTML = "";
  for (const name of body.datasets || []) select.add(new Option(name, name));
  $("dataset-note").textContent = body.error || `${(body.datasets || []).length} datasets in dataset_info.json`;
  changed();
}

async function detectTemplate() {
  const model = $("f-model_name_or_path").value.trim();
  const { body } = await api(`/api/template?model=${encodeURIComponent(model)}`);
  const select = $("f-template");
  const chosen = select.value;
  select.innerHTML = "";
  select.add(new Option("(default: detected)", ""));
  for (const name of body.choices || []) select.add(new Option(name, name));
  select.value = chosen && [...select.options].some((o) => o.value === chosen) ? chosen : "";
  $("template-note").textContent = body.detected ? `detected: ${body.detected} (${body.why})` : "";
  changed();
}

$("copy-yaml").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("yaml").textContent));
$("save-yaml").addEventListener("click", () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([$("yaml").textContent], { type: "text/yaml" }));
  link.download = "train.yaml";
  link.click();
});
$("load-yaml").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const { ok, body } = await api("/api/yaml", { method: "POST", body: await file.text() });
  if (!ok) { $("general").textContent = body.error; return; }
  setValues(body.values);
});

$("preview").addEventListener("click", async () => {
  $("preview-frame").srcdoc = "<p>reading the data...</p>";
  const { ok, body } = await post("/api/preview", values());
  $("preview-frame").srcdoc = ok ? body.html : `<p style="color:#c00">${escapeHtml(body.error || "failed")}</p>`;
});

$("start").addEventListener("click", async () => {
  const checked = await validate();
  if (!checked.ok) { $("start-note").textContent = "fix the messages above first"; return; }
  const { ok, body } = await post("/api/runs", values());
  if (!ok) { $("start-note").textContent = body.error || "not started"; return; }
  $("start-note").textContent = `started: ${body.id}`;
  currentRun = body.id;
  await refreshRuns();
  showTab("watch");
});
$("stop").addEventListener("click", async () => {
  if (currentRun) await post(`/api/run/stop?id=${encodeURIComponent(currentRun)}`, {});
});

// -- watch --------------------------------------------------------------------------------------------
async function refreshRuns() {
  const { body } = await api("/api/runs");
  const select = $("run-select");
  const keep = currentRun || select.value;
  select.innerHTML = "";
  for (const run of body.runs || []) select.add(new Option(`${run.name} (${run.status})`, run.id));
  if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
  currentRun = select.value || null;
}
$("run-select").addEventListener("change", () => { currentRun = $("run-select").value; poll(); });

function lastWith(rows, key) { for (let i = rows.length - 1; i >= 0; i--) if (rows[i][key] !== undefined) return rows[i]; return null; }

async function poll() {
  if (!currentRun) return;
  const { ok, body } = await api(`/api/run?id=${encodeURIComponent(currentRun)}`);
  if (!ok) return;
  $("run-status").textContent = body.status;
  $("run-status").dataset.status = body.status;
  $("run-error").textContent = body.error || "";
  const rows = body.log || [];
  const last = rows.length ? rows[rows.length - 1] : {};
  const total = last.total_steps || body.total_steps;
  const step = last.step || 0;
  $("progress-bar").style.width = total ? `${Math.min(100, (100 * step) / total)}%` : "0";
  const figures = [`step ${step}${total ? " / " + total : ""}`];
  if (total && step && last.elapsed_s) figures.push(`ETA ${Math.round((last.elapsed_s / step) * (total - step))} s`);
  const speed = lastWith(rows, "tokens_per_s");
  if (speed) figures.push(`${speed.tokens_per_s.toFixed(0)} tokens/s`);
  const mfu = lastWith(rows, "throughput/mfu");
  if (mfu) figures.push(`MFU ${(100 * mfu["throughput/mfu"]).toFixed(1)}%`);
  if (body.rss_mib) figures.push(`memory ${body.rss_mib.toFixed(0)} MiB`);
  $("run-figures").textContent = figures.join(" · ");
  plot($("loss-plot"), { loss: rows.filter((r) => r.loss !== undefined).map((r) => [r.step, r.loss]) });
  const evalSeries = {};
  for (const row of rows) for (const [key, value] of Object.entries(row)) {
    if ((key === "eval_loss" || key.startsWith("eval/")) && typeof value === "number") {
      (evalSeries[key] = evalSeries[key] || []).push([row.step, value]);
    }
  }
  plot($("eval-plot"), evalSeries);
  $("console").textContent = body.console || "";
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
function plot(svg, series) {
  const all = Object.values(series).flat().filter((p) => Number.isFinite(p[1]));
  svg.innerHTML = "";
  if (!all.length) { svg.innerHTML = '<text x="20" y="130" class="empty">no points yet</text>'; return; }
  const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  const X = (x) => 50 + (420 * (x - x0)) / ((x1 - x0) || 1);
  const Y = (y) => 230 - (210 * (y - y0)) / ((y1 - y0) || 1);
  let markup = `<line x1="50" y1="230" x2="470" y2="230" class="axis"/><line x1="50" y1="20" x2="50" y2="230" class="axis"/>` +
    `<text x="4" y="24" class="tick">${y1.toPrecision(3)}</text><text x="4" y="230" class="tick">${y0.toPrecision(3)}</text>` +
    `<text x="50" y="250" class="tick">${x0}</text><text x="440" y="250" class="tick">${x1}</text>`;
  Object.entries(series).forEach(([name, points], i) => {
    const colour = COLOURS[i % COLOURS.length];
    const finite = points.filter((p) => Number.isFinite(p[1]));
    markup += `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${finite.map((p) => `${X(p[0])},${Y(p[1])}`).join(" ")}"/>`;
    markup += finite.map((p) => `<circle class="point" data-series="${escapeHtml(name)}" cx="${X(p[0])}" cy="${Y(p[1])}" r="3" fill="${colour}"/>`).join("");
    markup += `<text x="${60 + 150 * (i % 3)}" y="${14 + 0 * i}" fill="${colour}" class="legend">${escapeHtml(name)}</text>`;
  });
  svg.innerHTML = markup;
}

// -- evaluate, check, export --------------------------------------------------------------------------
async function runJob(kind, jobValues, statusId, consoleId, show) {
  if (!currentRun) { $(statusId).textContent = "select a run in Watch first"; return; }
  $(statusId).textContent = `${kind}: starting`;
  const { ok, body } = await post("/api/jobs", { kind, run: currentRun, values: jobValues });
  if (!ok) { $(statusId).textContent = body.error; return; }
  const timer = setInterval(async () => {
    const state = (await api(`/api/job?id=${encodeURIComponent(body.id)}`)).body;
    $(statusId).textContent = `${kind}: ${state.status}${state.error ? " - " + state.error : ""}`;
    $(consoleId).textContent = state.console || "";
    if (state.status !== "running") { clearInterval(timer); if (state.result) show(state.result); }
  }, 1000);
}

function table(rows, columns) {
  return `<table><tr>${columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr>` +
    rows.map((r) => `<tr>${columns.map((c) => `<td>${escapeHtml(String(r[c] ?? ""))}</td>`).join("")}</tr>`).join("") + "</table>";
}

$("run-eval").addEventListener("click", () => {
  const jobValues = { tasks: $("eval-tasks").value.trim() };
  if ($("eval-include_path").value.trim()) jobValues.include_path = $("eval-include_path").value.trim();
  if ($("eval-limit").value.trim()) jobValues.limit = Number($("eval-limit").value);
  runJob("eval", jobValues, "job-status", "job-console", (result) => {
    const rows = Object.entries(result.results || {}).flatMap(([task, metrics]) =>
      // lm-eval's "metric,filter" keys; stderrs and counts ("samples") left out
      Object.entries(metrics).filter(([k, v]) => typeof v === "number" && k.includes(",") && !k.includes("stderr"))
        .map(([key, value]) => ({ task, metric: key.endsWith(",none") ? key.split(",")[0] : key,
          value: value.toFixed(4) })));
    $("job-result").innerHTML = table(rows, ["task", "metric", "value"]);
  });
});
$("run-check").addEventListener("click", () => runJob("check", checkValues(), "job-status", "job-console", (result) => {
  $("job-result").innerHTML = table(result.results || [], ["name", "verdict", "value", "threshold"]);
}));
function checkValues() {
  const probes = $("check-probes").value.split(",").map((p) => p.trim()).filter((p) => p);
  return probes.length ? { probes } : {};
}
$("run-export").addEventListener("click", () => {
  const jobValues = { export_size: Number($("export-size").value || 5) };
  if ($("export-dir").value.trim()) jobValues.export_dir = $("export-dir").value.trim();
  runJob("export", jobValues, "export-status", "export-console", (result) => {
    $("export-status").textContent = `export: finished - ${result.export_dir}`;
  });
});

// -- chat ---------------------------------------------------------------------------------------------
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.textContent = text;
  $("chat-log").appendChild(div);
  return div;
}

$("chat-send").addEventListener("click", async () => {
  const text = $("chat-input").value;
  if (!text || !currentRun) return;
  $("chat-input").value = "";
  chatHistory.push({ role: "user", content: text });
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  const response = await fetch("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ run: currentRun, messages: chatHistory, system: $("chat-system").value,
      temperature: Number($("chat-temperature").value), top_p: Number($("chat-top_p").value),
      max_tokens: Number($("chat-max_tokens").value) }) });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  answer.dataset.pieces = "0";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      if (!event.startsWith("data: ")) continue;
      const data = JSON.parse(event.slice(6));
      if (data.text !== undefined) {
        answer.textContent += data.text;
        answer.dataset.pieces = String(Number(answer.dataset.pieces) + 1);
      }
      if (data.error) answer.textContent += `\n[error: ${data.error}]`;
      if (data.done) answer.dataset.finish = data.done;
    }
  }
  chatHistory.push({ role: "assistant", content: answer.textContent });
});
$("chat-input").addEventListener("keydown", (event) => { if (event.key === "Enter") $("chat-send").click(); });
$("chat-clear").addEventListener("click", () => { chatHistory = []; $("chat-log").innerHTML = ""; });

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

buildForm().then(refreshRuns).then(poll);
setInterval(() => { refreshRuns().then(poll); }, 1000);
