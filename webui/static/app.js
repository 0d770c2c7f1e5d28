// Live updates without inline scripts (the Content-Security-Policy forbids them).
"use strict";

function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

function when(ms) {
  if (!ms || ms === "0") return "-";
  const d = new Date(Number(ms));
  return d.toISOString().replace("T", " ").replace(/\.(\d{3})Z$/, ".$1Z");
}

// "3 min ago" / "in 2 h", as the server renders them (webui/web.py relative()).
function relative(ms) {
  if (!ms || ms === "0") return "-";
  const diff = Date.now() - Number(ms), secs = Math.abs(diff) / 1000;
  if (secs < 1) return "just now";
  let amount = "";
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]]) {
    if (secs >= size) { amount = `${Math.floor(secs / size)} ${unit}`; break; }
  }
  return diff < 0 ? `in ${amount}` : `${amount} ago`;
}

// A time on the page: relative, the exact one on hover.
function setTime(id, ms) {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = relative(ms);
  el.title = when(ms);
}

function watchJob() {
  const card = document.getElementById("job");
  if (!card) return;
  const id = card.dataset.jobId, server = card.dataset.server;
  const output = document.getElementById("output");
  const note = document.getElementById("live-note");
  // The statuses a job ends in, rendered by the server (jobcluster.model.TERMINAL).
  const terminal = (document.body.dataset.terminalStatuses || "").split(" ");
  let reloaded = false, finished = false, failed = false, attempt = null;
  const source = new EventSource(`/jobs/${encodeURIComponent(id)}/events?server=${encodeURIComponent(server)}`);
  source.addEventListener("job", (e) => {
    const data = JSON.parse(e.data);
    const job = data.job;
    const status = document.getElementById("status");
    status.textContent = job.status;
    status.className = `status s-${job.status}`;
    setText("attempts", `${job.attempts} (max retries ${job.max_retries})`);
    setText("exit-code", job.exit_code === undefined || job.exit_code === null ? "-" : String(job.exit_code));
    setTime("started", job.started_at_ms);
    setTime("finished", job.finished_at_ms);
    setText("worker", job.worker_id || "-");
    setText("last-error", job.last_error || "-");
    // The watch stream does not compute why a job waits: keep the page's reason while it is QUEUED.
    const waiting = document.getElementById("waiting-reason");
    if (waiting && job.status !== "QUEUED") waiting.hidden = true;
    // A new attempt (its worker died, or a retry): its own output only, and the attempts table again.
    if (attempt !== null && job.attempts !== attempt) {
      output.textContent = "";
      refreshAttempts(id, server);
    }
    attempt = job.attempts;
    output.textContent = data.final ? job.output : (data.live_output || output.textContent);
    const truncated = document.getElementById("truncated");
    if (truncated) truncated.hidden = !job.output_truncated;
    output.scrollTop = output.scrollHeight;
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.hidden = terminal.includes(job.status);
    note.textContent = data.final ? "" : "live";
    if (data.final) {
      finished = true;
      source.close();
      // Refresh the attempts table (and the Retry button) once, without losing the live view.
      if (!reloaded) { reloaded = true; refreshAttempts(id, server); }
    }
  });
  source.addEventListener("failure", (e) => {
    failed = true;
    note.textContent = JSON.parse(e.data).error;
    source.close();
  });
  // A stream that ends without a final event reached the server's WATCH_MAX_LIFE: watch again.
  source.addEventListener("end", () => {
    source.close();
    if (!finished && !failed) setTimeout(watchJob, 1000);
  });
}

async function refreshAttempts(id, server) {
  const r = await fetch(`/jobs/${encodeURIComponent(id)}?server=${encodeURIComponent(server)}`);
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  for (const sel of ["#attempt-table", ".actions"]) {
    const fresh = doc.querySelector(sel), old = document.querySelector(sel);
    if (fresh && old) old.replaceWith(fresh);
  }
}

// The cluster (every 2 s), jobs and dead-letter pages (every 5 s) refresh themselves: the page is fetched
// again and its <main> replaced, unless the person is typing in it.
const REFRESH = { cluster: 2000, jobs: 5000, dlq: 5000 };

function refreshPage() {
  const every = REFRESH[document.body.dataset.page];
  if (!every) return;
  setInterval(async () => {
    const typing = document.activeElement && document.activeElement.closest("main form");
    if (typing || document.hidden) return;
    const r = await fetch(location.href);
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.querySelector("main"), old = document.querySelector("main");
    if (fresh && old) old.replaceWith(fresh);
  }, every);
}

// A destructive button asks first: its form carries data-confirm (no inline script under the CSP).
document.addEventListener("submit", (e) => {
  const message = e.target.dataset && e.target.dataset.confirm;
  if (message && !window.confirm(message)) e.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => { watchJob(); refreshPage(); });
