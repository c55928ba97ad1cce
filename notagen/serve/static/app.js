// notagen studio page: prompt pickers from the model's registry, a job form, live progress by polling,
// then every rendered page, an audio player and the downloads of each piece. Text from the server is only
// ever set with textContent (never parsed as HTML).
"use strict";

const UNCONDITIONAL = "";
const POLL_MS = 400;
const state = { prompts: [], registry: false, jobId: null, timer: null, downloads: [] };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

async function api(path, options = {}) {
  // State changes carry the studio's header: a page on another site cannot send it (the server refuses them).
  if (options.method && options.method !== "GET") {
    options = { ...options, headers: { ...(options.headers || {}), "X-Notagen-Studio": "1" } };
  }
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
      : response.statusText;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// -- prompt pickers -----------------------------------------------------------------------------------------

function fillSelect(select, values, placeholder) {
  const previous = select.value;
  select.replaceChildren();
  if (placeholder !== null) select.append(el("option", { value: UNCONDITIONAL }, placeholder));
  for (const value of values) select.append(el("option", { value }, value));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

const unique = (items) => [...new Set(items)].sort((a, b) => a.localeCompare(b));

function updatePickers() {
  const period = $("period").value;
  const composers = unique(state.prompts.filter((p) => p.period === period).map((p) => p.composer));
  fillSelect($("composer"), composers, null);
  $("composer").disabled = !period;
  const composer = $("composer").value;
  const instruments = unique(state.prompts.filter((p) => p.period === period && p.composer === composer)
    .map((p) => p.instrumentation));
  fillSelect($("instrumentation"), instruments, null);
  $("instrumentation").disabled = !period;
  const chosen = state.prompts.find((p) => p.period === period && p.composer === composer
    && p.instrumentation === $("instrumentation").value);
  $("prompt-note").textContent = !state.registry ? "This model has no prompt registry: generation is unconditional."
    : chosen ? `${chosen.count} training piece(s) with this prompt.` : "Unconditional: no prompt.";
}

async function loadPrompts() {
  const data = await api("/api/prompts");
  state.prompts = data.prompts;
  state.registry = data.registry;
  if (state.registry) {
    fillSelect($("period"), unique(state.prompts.map((p) => p.period)), "— unconditional —");
    $("period").value = state.prompts[0].period;
  } else {
    fillSelect($("period"), [], "unconditional");
  }
  updatePickers();
}

async function loadModel() {
  const data = await api("/api/models");
  const model = data.models[0];
  const millions = model.parameters ? `${(model.parameters / 1e6).toFixed(2)} M parameters` : "";
  const name = String(model.source).split(/[\\/]/).filter(Boolean).pop() || model.source;
  $("model-info").title = model.source;
  $("model-info").textContent = `model ${name} · ${millions} · ${model.device} · `
    + (model.unconditional_only ? "unconditional" : `${model.prompts} prompts`);
}

// -- jobs -----------------------------------------------------------------------------------------------------

function numberOf(id) { return Number($(id).value); }

function jobRequest() {
  const period = $("period").value;
  const prompt = period ? { period, composer: $("composer").value || null,
    instrumentation: $("instrumentation").value || null } : null;
  return {
    prompt,
    sampling: { temperature: numberOf("temperature"), top_k: numberOf("top_k"), top_p: numberOf("top_p"),
      strict: $("strict").checked },
    seed: numberOf("seed"), n: numberOf("n"), max_bars: numberOf("max_bars"), retries: numberOf("retries"),
  };
}

async function submitJob(event) {
  event.preventDefault();
  showError("");
  const form = new FormData();
  form.append("request", JSON.stringify(jobRequest()));
  const file = $("beginning").files[0];
  if (file) form.append("file", file, file.name);
  $("generate").disabled = true;
  try {
    const job = await api("/api/jobs", { method: "POST", body: form });
    $("results").replaceChildren();
    watchJob(job.id);
  } catch (error) {
    showError(error.status === 429 ? `The studio is busy: ${error.message}. Try again in a moment.` : error.message);
    $("generate").disabled = false;
  }
}

function watchJob(jobId) {
  state.jobId = jobId;
  clearTimeout(state.timer);
  history.replaceState(null, "", `#job=${encodeURIComponent(jobId)}`); // a link to this job
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  poll();
}

async function poll() {
  const jobId = state.jobId;
  let job;
  try {
    job = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    showError(error.message);
    $("generate").disabled = false;
    return;
  }
  if (jobId !== state.jobId) return;
  showJob(job);
  if (job.state === "queued" || job.state === "running") {
    state.timer = setTimeout(poll, POLL_MS);
  } else {
    $("generate").disabled = false;
    loadHistory();
  }
}

function showJob(job) {
  const p = job.progress || {};
  const running = job.state === "queued" || job.state === "running";
  $("cancel").hidden = !running;
  $("job-state").textContent = job.cancelling ? "cancelling" : job.state;
  const parts = [];
  if (job.state === "queued") parts.push(`position ${job.position + 1} in the queue`);
  if (p.total) parts.push(`${p.done || 0}/${p.total} pieces`);
  if (p.phase) parts.push(p.phase);
  if (p.bars !== undefined) parts.push(`${p.bars} bars`);
  if (p.chars !== undefined) parts.push(`${p.chars} chars`);
  if (p.chars_per_second) parts.push(`${p.chars_per_second} chars/s`);
  if (p.elapsed !== undefined) parts.push(`${p.elapsed} s`);
  if (job.error) parts.push(job.error);
  $("job-stats").textContent = parts.join(" · ");
  const bar = $("job-progress");
  if (job.state === "running" && p.phase === "generating" && job.request.max_bars) {
    bar.value = Math.min(1, (p.bars || 0) / job.request.max_bars);
  } else if (!running) {
    bar.value = 1;
  } else {
    bar.removeAttribute("value"); // indeterminate
  }
  if (!running) showResults(job);
}

function fileUrl(job, name, download = false) {
  const path = name.split("/").map(encodeURIComponent).join("/");
  return `/api/jobs/${encodeURIComponent(job.id)}/files/${path}${download ? "?download=1" : ""}`;
}

// What a piece is written as comes from the server's one table (/api/formats): its labelled files are downloads.
async function loadFormats() {
  const data = await api("/api/formats");
  state.downloads = data.files.filter((file) => file.label).map((file) => [file.key, file.label]);
  $("beginning").setAttribute("accept", data.inputs.join(","));
}

// The sampling defaults are the server's (SamplingSettings, through the request schema in /openapi.json).
async function loadDefaults() {
  const spec = await api("/openapi.json");
  const fields = spec.components.schemas.SamplingIn.properties;
  for (const id of ["temperature", "top_k", "top_p"]) $(id).value = fields[id].default;
  $("strict").checked = fields.strict.default;
}

function showResults(job) {
  const box = $("results");
  box.replaceChildren();
  if (job.state === "cancelled") box.append(el("p", { class: "muted" }, "The job was cancelled."));
  if (job.state === "failed") box.append(el("p", { class: "problem" }, `The job failed: ${job.error}`));
  for (const piece of job.results || []) box.append(renderPiece(job, piece));
}

const STOP_REASONS = { eos: "ended by the model", max_bars: "stopped at the bar limit",
  max_chars: "stopped at the character limit", max_patches: "stopped at the patch limit",
  max_seconds: "stopped at the time limit", context_full: "stopped: context full" };

function renderPiece(job, piece) {
  const files = piece.files || {};
  const article = el("article", { class: "piece", "data-name": piece.name });
  const title = el("h3", {}, piece.name);
  title.append(el("span", { class: `badge ${piece.valid ? "valid" : "invalid"}` }, piece.valid ? "valid" : "invalid"));
  const from = job.request && job.request.continue_from ? `continues ${job.request.continue_from} · ` : "";
  title.append(el("span", { class: "muted" },
    `${from}${piece.bars} new bars · ${STOP_REASONS[piece.stop_reason] || piece.stop_reason} · ${piece.chars} chars`
    + ` · ${piece.chars_per_second} chars/s` + (piece.retries ? ` · ${piece.retries} retries` : "")));
  article.append(title);
  if (!piece.valid) {
    article.append(el("p", { class: "problem" },
      `This piece is not valid music: ${piece.error || "unknown reason"}. What the model wrote is shown below.`));
  }
  const pages = files.png || files.svg || [];
  for (const [index, page] of pages.entries()) {
    article.append(el("img", { class: "score-page", src: fileUrl(job, page), alt: `score page ${index + 1}` }));
  }
  if (!pages.length) {
    const why = (piece.skipped && (piece.skipped.png || piece.skipped.svg)) || "nothing to engrave";
    article.append(el("p", { class: "muted" }, `No score pages: ${why}`));
  }
  if (files.wav) {
    const audio = el("audio", { class: "player", controls: "", preload: "none", src: fileUrl(job, files.wav[0]) });
    article.append(audio);
  } else {
    const why = (piece.skipped && piece.skipped.wav) || "no audio";
    article.append(el("p", { class: "muted" }, `No audio: ${why}`));
  }
  const list = el("ul", { class: "downloads" });
  for (const [key, label] of state.downloads) {
    if (!files[key]) continue;
    const link = el("a", { href: fileUrl(job, files[key][0], true), download: "" }, label);
    const item = el("li");
    item.append(link);
    list.append(item);
  }
  article.append(list);
  if (files.raw_abc) {
    const details = el("details", piece.valid ? {} : { open: "" });
    details.append(el("summary", {}, "model text (raw ABC)"));
    const pre = el("pre", { class: "abc" }, "loading…");
    details.append(pre);
    fetch(fileUrl(job, files.raw_abc[0])).then((r) => r.text()).then((text) => { pre.textContent = text; })
      .catch((error) => { pre.textContent = `could not load: ${error}`; });
    article.append(details);
  }
  return article;
}

async function cancelJob() {
  if (!state.jobId) return;
  try {
    showJob(await api(`/api/jobs/${encodeURIComponent(state.jobId)}/cancel`, { method: "POST" }));
  } catch (error) {
    showError(error.message);
  }
}

// -- history --------------------------------------------------------------------------------------------------

function describe(job) {
  const r = job.request || {};
  const prompt = r.prompt ? `${r.prompt.period} / ${r.prompt.composer} / ${r.prompt.instrumentation}`
    : "unconditional";
  const valid = (job.results || []).filter((p) => p.valid).length;
  const outcome = job.state === "done" ? `${valid}/${(job.results || []).length} valid` : job.state;
  const when = new Date(job.created * 1000).toLocaleString();
  return `${when} · ${prompt}${r.continue_from ? ` · continues ${r.continue_from}` : ""} · seed ${r.seed} · ${outcome}`;
}

async function loadHistory() {
  let data;
  try { data = await api("/api/jobs"); } catch (error) { showError(error.message); return; }
  const list = $("history");
  list.replaceChildren();
  for (const job of data.jobs) {
    const item = el("li", { "data-job": job.id });
    const open = el("button", { type: "button" }, "show");
    open.addEventListener("click", () => watchJob(job.id));
    item.append(open, el("span", {}, describe(job)));
    list.append(item);
  }
  if (!data.jobs.length) list.append(el("li", { class: "muted" }, "No pieces yet."));
}

// -- start ----------------------------------------------------------------------------------------------------

async function start() {
  $("period").addEventListener("change", updatePickers);
  $("composer").addEventListener("change", updatePickers);
  $("instrumentation").addEventListener("change", updatePickers);
  $("generate-form").addEventListener("submit", submitJob);
  $("cancel").addEventListener("click", cancelJob);
  $("clear-beginning").addEventListener("click", () => { $("beginning").value = ""; });
  $("refresh-history").addEventListener("click", loadHistory);
  try {
    await Promise.all([loadModel(), loadPrompts(), loadFormats(), loadDefaults()]);
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(`Cannot reach the studio API: ${error.message}`);
  }
  loadHistory();
  const linked = /^#job=([0-9a-f]+)$/.exec(location.hash);
  if (linked) watchJob(linked[1]);
}

start();
