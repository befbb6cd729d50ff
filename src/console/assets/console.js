// fieldrelay console: live updates over server-sent events. The pages are complete without
// this script; it swaps the fragments the server sends, updates values, ages times and draws
// sparklines. No dependencies, no build step.
"use strict";
(function () {
  const HISTORY = 32;
  const LOG_LINES = 300;
  const page = { "/": "overview", "/devices": "devices", "/commands": "commands", "/log": "log" }[document.body.dataset.page];
  const rows = new Map();
  const live = document.getElementById("live");

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function span(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + pad(Math.floor(s % 86400 / 3600)) + "h";
  }
  // Local time and, outside the points table (which has an age column), how long ago or until.
  function times(root) {
    const now = Date.now();
    for (const t of root.querySelectorAll("time[data-ts]")) {
      const ts = Number(t.dataset.ts);
      t.title = new Date(ts).toISOString();
      if (t.parentElement && t.parentElement.classList.contains("ts")) {
        t.textContent = clock(ts);
        const age = t.parentElement.parentElement.querySelector(".age");
        if (age) age.textContent = span(now - ts);
      } else {
        t.textContent = clock(ts) + (ts > now ? " (in " + span(ts - now) + ")" : " (" + span(now - ts) + " ago)");
      }
    }
  }

  // A sparkline: one polyline, redrawn by changing its points (no new elements per update).
  function spark(row) {
    const values = row.history;
    if (values.length < 2) return;
    const min = Math.min(...values), max = Math.max(...values), w = 80, h = 18;
    const points = values.map((v, i) => {
      const x = (i / (values.length - 1)) * w;
      const y = max === min ? h / 2 : h - 1 - ((v - min) / (max - min)) * (h - 2);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    if (!row.line) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", "0 0 " + w + " " + h);
      svg.setAttribute("width", w);
      svg.setAttribute("height", h);
      svg.setAttribute("aria-hidden", "true");
      row.line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      svg.appendChild(row.line);
      row.spark.appendChild(svg);
    }
    row.line.setAttribute("points", points);
  }

  for (const tr of document.querySelectorAll("tr[data-d]")) {
    const spark_cell = tr.querySelector(".spark");
    const row = {
      tr, value: tr.querySelector(".v"), ts: tr.querySelector(".ts"), spark: spark_cell, line: null,
      history: (spark_cell.dataset.h || "").split(",").filter((v) => v !== "").map(Number),
      flash: false,
    };
    rows.set(tr.dataset.d + "\u0000" + tr.dataset.p, row);
    spark(row);
  }
  times(document);
  setInterval(() => times(document), 1000);

  // Values are applied once per frame, the newest per point: a burst of updates (or a hidden
  // tab) costs one pass over the changed rows, never a layout per row.
  const pending = new Map();
  let frame = 0;
  function onValues(updates) {
    for (const update of updates) pending.set(update[0] + "\u0000" + update[1], update);
    if (!frame) frame = requestAnimationFrame(applyValues);
  }
  function applyValues() {
    frame = 0;
    const now = Date.now();
    for (const [key, [, , text, ts, number]] of pending) {
      const row = rows.get(key);
      if (!row) continue;
      row.value.textContent = text;
      let t = row.ts.firstElementChild;
      if (!t) { t = document.createElement("time"); row.ts.appendChild(t); }
      t.dataset.ts = ts;
      t.textContent = clock(ts);
      const age = row.tr.querySelector(".age");
      if (age) age.textContent = span(now - ts);
      if (number !== null) {
        row.history.push(number);
        if (row.history.length > HISTORY) row.history.shift();
        spark(row);
      }
      // Alternating two animations restarts the highlight without forcing a layout.
      row.flash = !row.flash;
      row.tr.classList.toggle("fresh", row.flash);
      row.tr.classList.toggle("fresh2", !row.flash);
    }
    pending.clear();
  }

  function onHtml(fragments) {
    for (const [id, html] of Object.entries(fragments)) {
      const el = document.getElementById(id);
      if (el) { el.innerHTML = html; times(el); }
    }
  }

  function onLog(data) {
    const list = document.getElementById("log-lines");
    if (!list) return;
    const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
    list.insertAdjacentHTML("beforeend", data.html);
    while (list.children.length > LOG_LINES) list.firstElementChild.remove();
    times(list);
    if (atEnd) window.scrollTo(0, document.body.scrollHeight);
  }

  if (!page || !window.EventSource) return;
  const since = document.getElementById("since");
  const url = "/events?page=" + page + (since ? "&since=" + since.dataset.since : "");
  const source = new EventSource(url);
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live off"; });
  source.addEventListener("values", (e) => onValues(JSON.parse(e.data)));
  source.addEventListener("html", (e) => onHtml(JSON.parse(e.data)));
  source.addEventListener("log", (e) => onLog(JSON.parse(e.data)));
})();
