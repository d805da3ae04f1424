// The live page: polls GET v2/status every second and draws it. Producer-controlled strings (label
// names, task ids, rejection details) are data: they only ever go through textContent or canvas
// fillText, never as markup, and the server's Content-Security-Policy runs no other script.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const series = {};  // column -> values, aligned with series.t
  let events = [];
  let last = 0;  // time of the newest sample we hold
  let keep = 3600;
  let status = null;
  let token = null;
  const COLORS = { accuracy: "#4fc3f7", rolling: "#ffb74d", rate: "#66bb6a", lag: "#ef5350", cosine: "#ba68c8",
    lr_mean: "#4fc3f7", lr_min: "#8a96a3", lr_max: "#ffb74d" };

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    return digits === undefined ? String(Math.round(v)) : v.toFixed(digits);
  }
  function setFact(id, text, value) {
    const el = $(id);
    el.textContent = text;
    if (value !== undefined) el.dataset.value = value === null ? "" : String(value);
  }
  function badge(id, text, ok) {
    const el = $(id);
    el.textContent = text;
    el.className = "badge" + (ok === true ? " ok" : ok === false ? " no" : "");
  }
  function age(s) {
    if (s === null || s === undefined) return "–";
    return s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
  }

  // -- bars: one row per name, built with textContent only ----------------------------------------
  function bars(id, entries, max, digits, empty) {
    const box = $(id);
    box.replaceChildren();
    box.dataset.rows = String(entries.length);
    if (!entries.length) {
      const e = document.createElement("div");
      e.className = "empty";
      e.textContent = empty;
      box.appendChild(e);
      return;
    }
    for (const [name, v] of entries) {
      const n = document.createElement("div");
      n.className = "name";
      n.textContent = name;
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = (max > 0 ? Math.max(0, Math.min(1, v / max)) * 100 : 0) + "%";
      track.appendChild(fill);
      const num = document.createElement("div");
      num.className = "num";
      num.textContent = fmt(v, digits);
      box.append(n, track, num);
    }
  }

  // -- line charts on a canvas --------------------------------------------------------------------
  function chart(id, cols, opts) {
    const canvas = $(id);
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const t = series.t || [];
    let points = 0;
    for (const c of cols) points += (series[c] || []).filter((v) => v !== null).length;
    canvas.dataset.points = String(points);
    const L = 48, R = opts.right ? 48 : 10, T = 18, B = 20;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#8a96a3";
    if (!points) {
      g.fillText("no data yet", L + 10, T + 20);
      return;
    }
    const t0 = t[0], t1 = Math.max(t[t.length - 1], t0 + 1);
    const x = (tt) => L + ((tt - t0) / (t1 - t0)) * (w - L - R);
    const range = (cs) => {
      let lo = opts.min, hi = opts.max;
      if (lo === undefined || hi === undefined) {
        let a = Infinity, b = -Infinity;
        for (const c of cs) for (const v of series[c] || []) if (v !== null) { a = Math.min(a, v); b = Math.max(b, v); }
        if (lo === undefined) lo = a === Infinity ? 0 : Math.min(a, 0);
        if (hi === undefined) hi = b === -Infinity ? 1 : b;
      }
      if (hi <= lo) hi = lo + 1;
      return [lo, hi];
    };
    const axes = [{ cols: opts.right ? cols.filter((c) => c !== opts.right) : cols, side: "left" }];
    if (opts.right) axes.push({ cols: [opts.right], side: "right" });
    g.strokeStyle = "#2a3440";
    g.lineWidth = 1;
    for (const ax of axes) {
      const [lo, hi] = range(ax.cols);
      ax.y = (v) => T + (1 - (v - lo) / (hi - lo)) * (h - T - B);
      for (let i = 0; i <= 4; i++) {
        const v = lo + ((hi - lo) * i) / 4, yy = ax.y(v);
        if (ax.side === "left") { g.beginPath(); g.moveTo(L, yy); g.lineTo(w - R, yy); g.stroke(); }
        const label = Math.abs(hi - lo) >= 10 ? v.toFixed(0) : v.toFixed(2);
        g.fillStyle = ax.side === "left" ? "#8a96a3" : COLORS[opts.right];
        g.fillText(label, ax.side === "left" ? 4 : w - R + 4, yy + 4);
      }
    }
    // task changes and drift detections: vertical marks (task names drawn as canvas text)
    for (const e of events) {
      if (!opts.markers || e.t < t0) continue;
      const xx = x(e.t);
      g.strokeStyle = e.kind === "drift" ? "rgba(239,83,80,0.8)" : "rgba(138,150,163,0.7)";
      g.setLineDash(e.kind === "drift" ? [3, 3] : []);
      g.beginPath(); g.moveTo(xx, T); g.lineTo(xx, h - B); g.stroke();
      g.setLineDash([]);
      if (e.kind === "task") { g.fillStyle = "#8a96a3"; g.fillText(e.text.slice(0, 12), xx + 2, T + 9); }
    }
    for (const ax of axes) {
      for (const c of ax.cols) {
        const ys = series[c] || [];
        g.strokeStyle = COLORS[c] || "#d8dee6";
        g.lineWidth = 1.5;
        g.beginPath();
        let pen = false;
        for (let i = 0; i < ys.length; i++) {
          if (ys[i] === null) { pen = false; continue; }
          const px = x(t[i]), py = ax.y(ys[i]);
          if (pen) g.lineTo(px, py); else g.moveTo(px, py);
          pen = true;
        }
        g.stroke();
      }
    }
    // legend and time axis
    let lx = L;
    for (const c of cols) {
      g.fillStyle = COLORS[c] || "#d8dee6";
      g.fillRect(lx, 4, 10, 3);
      g.fillText((opts.names && opts.names[c]) || c, lx + 14, 10);
      lx += 20 + g.measureText((opts.names && opts.names[c]) || c).width;
    }
    g.fillStyle = "#8a96a3";
    const span = t1 - t0;
    g.fillText("-" + age(span), L, h - 5);
    g.fillText("now", w - R - 22, h - 5);
  }

  // -- one refresh --------------------------------------------------------------------------------
  function merge(doc) {
    const s = doc.series;
    for (const c of Object.keys(s)) {
      series[c] = (series[c] || []).concat(s[c]);
      if (series[c].length > keep) series[c] = series[c].slice(series[c].length - keep);
    }
    events = events.concat(doc.events);
    if (series.t && series.t.length) {
      last = series.t[series.t.length - 1];
      events = events.filter((e) => e.t >= series.t[0]);
    }
  }

  function render(doc) {
    const n = doc.now;
    $("model").textContent = "model " + (n.model || "") + " · learner " + (n.learner || "");
    badge("role", n.role || "?");
    badge("ready", n.ready ? "ready" : "not ready", !!n.ready);
    if (n.broker_up === null || n.broker_up === undefined) badge("broker", "no broker (" + (n.role || "") + ")");
    else badge("broker", n.broker_up ? "broker up" : "broker down", n.broker_up === 1);
    setFact("accuracy", fmt(n.accuracy, 4), n.accuracy);
    setFact("rolling", fmt(n.rolling, 4), n.rolling);
    setFact("learned", fmt(n.learned), n.learned);
    const rates = series.rate || [];
    setFact("rate", fmt(rates.length ? rates[rates.length - 1] : null, 1));
    setFact("lag", fmt(n.lag));
    setFact("task", n.task === null || n.task === undefined ? "–" : String(n.task));
    setFact("versions", [n.model_version, n.published_version, n.served_version].map((v) => fmt(v)).join(" / "));
    setFact("checkpoint", age(n.checkpoint_age));
    chart("chart-accuracy", ["accuracy", "rolling"], { min: 0, max: 1, markers: true,
      names: { accuracy: "cumulative", rolling: "rolling" } });
    chart("chart-rate", ["rate", "lag"], { right: "lag", names: { rate: "examples/s", lag: "lag (right)" } });
    chart("chart-cosine", ["cosine"], { min: -1, max: 1, markers: true });
    $("card-lr").hidden = !n.lr;
    if (n.lr) chart("chart-lr", ["lr_mean", "lr_min", "lr_max"], { names: { lr_mean: "mean", lr_min: "min", lr_max: "max" } });
    bars("tasks", Object.entries(n.tasks || {}), 1, 3, "no task ids in the stream");
    const cap = n.buffer_capacity;
    $("buffer-fill").textContent = cap ? fmt(n.buffer_examples) + " / " + fmt(cap) : "";
    const perClass = Object.entries(n.buffer || {});
    bars("buffer", perClass, Math.max(1, ...perClass.map((e) => e[1])), undefined, "no replay buffer");
    const rej = Object.entries(n.rejected || {}).filter((e) => e[1] > 0);
    bars("rejected", rej, Math.max(1, ...rej.map((e) => e[1])), undefined, "none");
  }

  let busy = false;  // one poll at a time: a slow answer must not be merged twice
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("v2/status?since=" + last, { cache: "no-store" });
      if (!r.ok) throw new Error(String(r.status));
      const doc = await r.json();
      keep = doc.history_size;
      status = doc;
      $("keep").textContent = age(doc.history_size * doc.interval_s);
      merge(doc);
      render(doc);
      setupTry(doc);
      $("stale").hidden = true;
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
    } catch (err) {
      $("stale").hidden = false;
    } finally {
      busy = false;
    }
  }

  // -- try it -------------------------------------------------------------------------------------
  let tryReady = false;
  function setupTry(doc) {
    if (tryReady) return;
    tryReady = true;
    const nIn = doc.now.n_inputs;
    $("n-inputs").textContent = String(nIn);
    $("auth").hidden = !doc.now.auth;
    if (nIn === 784) setupPad();
  }

  let asked = 0;  // answers may arrive out of order while drawing: show the newest question's only
  async function predict(row) {
    const mine = ++asked;
    const headers = { "Content-Type": "application/json" };
    const t = $("token").value || token;
    if (t) headers.Authorization = "Bearer " + t;
    const r = await fetch("predict", { method: "POST", headers, body: JSON.stringify({ x: row }) });
    const body = await r.json().catch(() => ({}));
    if (mine !== asked) return false;
    if (r.status === 401) {
      $("auth").hidden = false;
      showError("this server needs its bearer token: enter it above");
      return false;
    }
    if (!r.ok) { showError(body.error || ("HTTP " + r.status)); return false; }
    const ans = $("answer");
    ans.replaceChildren();
    const b = document.createElement("b");
    b.id = "prediction";
    b.textContent = body.label;
    ans.append("prediction: ", b, " (model version " + body.model_version + ")");
    const probs = Object.entries(body.probabilities || {}).sort((a, c) => c[1] - a[1]);
    bars("probs", probs, 1, 3, "");
    return true;
  }
  function showError(msg) {
    const ans = $("answer");
    ans.replaceChildren();
    ans.textContent = msg;
  }

  $("send").addEventListener("click", () => {
    let row;
    try { row = JSON.parse($("row").value); } catch (e) { showError("not JSON: " + e.message); return; }
    if (row && !Array.isArray(row) && Array.isArray(row.x)) row = row.x;
    if (!Array.isArray(row)) { showError("give one row: a JSON list of numbers"); return; }
    predict(row);
  });
  $("random").addEventListener("click", () => {
    const ex = status && status.example;
    if (!ex) { showError("no example yet: the learner has not published one (a replica has none)"); return; }
    $("row").value = JSON.stringify(ex.x);
    const row = ex.x.slice();
    predict(row).then((ok) => {
      if (ok) $("answer").append(" · label sent by the producer: ", String(ex.label));
    });
  });

  // the 28x28 pad: draw at 10x, crop the strokes' box, scale it to 20x20 centred in 28x28 (as MNIST)
  function setupPad() {
    $("draw-box").hidden = false;
    const pad = $("pad");
    const g = pad.getContext("2d");
    const clear = () => { g.fillStyle = "#000"; g.fillRect(0, 0, pad.width, pad.height); };
    clear();
    g.lineCap = "round"; g.lineJoin = "round"; g.lineWidth = 20; g.strokeStyle = "#fff";
    let down = false, lastSent = 0, pending = null;
    const pos = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
    pad.addEventListener("pointerdown", (e) => {
      down = true;
      pad.setPointerCapture(e.pointerId);
      const [x, y] = pos(e); g.beginPath(); g.moveTo(x, y); g.lineTo(x, y); g.stroke();
      pad.dataset.moves = "0";
    });
    pad.addEventListener("pointermove", (e) => {
      if (!down) return;
      for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) { const [x, y] = pos(ev); g.lineTo(x, y); }
      g.stroke();
      pad.dataset.moves = String(Number(pad.dataset.moves) + 1);
      const now = Date.now();
      if (now - lastSent > 200) { lastSent = now; predict(digit()); }
    });
    const up = () => { if (down) { down = false; clearTimeout(pending); pending = setTimeout(() => predict(digit()), 10); } };
    pad.addEventListener("pointerup", up);
    pad.addEventListener("pointercancel", up);
    $("clear").addEventListener("click", () => { clear(); $("answer").textContent = ""; bars("probs", [], 1, 3, ""); });
    function digit() {
      const img = g.getImageData(0, 0, pad.width, pad.height).data;
      let x0 = pad.width, y0 = pad.height, x1 = -1, y1 = -1;
      for (let y = 0; y < pad.height; y++) for (let x = 0; x < pad.width; x++) {
        if (img[(y * pad.width + x) * 4] > 32) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
      }
      const small = document.createElement("canvas");
      small.width = 28; small.height = 28;
      const s = small.getContext("2d");
      s.fillStyle = "#000"; s.fillRect(0, 0, 28, 28);
      if (x1 >= 0) {
        const bw = x1 - x0 + 1, bh = y1 - y0 + 1, k = 20 / Math.max(bw, bh);
        s.imageSmoothingEnabled = true; s.imageSmoothingQuality = "high";
        s.drawImage(pad, x0, y0, bw, bh, (28 - bw * k) / 2, (28 - bh * k) / 2, bw * k, bh * k);
      }
      const d = s.getImageData(0, 0, 28, 28).data, row = [];
      for (let i = 0; i < 784; i++) row.push(Math.round(d[i * 4] / 255 * 1000) / 1000);
      return row;
    }
  }

  refresh();
  setInterval(refresh, 1000);
  window.addEventListener("resize", () => status && render(status));
})();
