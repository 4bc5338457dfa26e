"use strict";
// Shared helpers of the dashboard pages: API calls, tables, downloads and hand-built
// SVG charts. No framework, no network access beyond this server.
const D = (() => {
  const $ = (s, el = document) => el.querySelector(s);
  const $$ = (s, el = document) => Array.from(el.querySelectorAll(s));

  async function api(url, opts) {
    const r = await fetch(url, opts);
    let j;
    try { j = await r.json(); } catch (_) { j = { error: r.status + " " + r.statusText }; }
    if (!r.ok) throw new Error(j.error || r.statusText);
    return j;
  }

  function debounce(f, ms) {
    let t;
    return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
  }

  function status(msg, isErr) {
    const el = $("#status");
    el.textContent = msg || "";
    el.className = isErr ? "error" : "";
  }

  const KIB = 1024, MIB = KIB * 1024, GIB = MIB * 1024;
  function bytes(b) {
    if (b === null || b === undefined) return "";
    const a = Math.abs(b);
    if (a >= GIB) return (b / GIB).toFixed(2) + " GiB";
    if (a >= MIB) return (b / MIB).toFixed(1) + " MiB";
    if (a >= KIB) return (b / KIB).toFixed(1) + " KiB";
    return b + " B";
  }
  function num(v) {
    if (typeof v !== "number") return v;
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return v.toPrecision(4).replace(/\.?0+$/, "");
  }
  // A cell: byte-ish keys as sizes, nested values compact.
  function cell(key, v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number" && /bytes$/.test(key)) return bytes(v);
    if (typeof v === "number") return num(v);
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (Array.isArray(v)) return v.map(x => typeof x === "object" ? JSON.stringify(x) : String(x)).join("; ");
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // A table of `rows` (objects). `cols`: [{key, label, fmt(value,row) -> string|Node}] or
  // null for every scalar key of the rows (so new report fields show up unasked).
  function table(el, rows, cols) {
    if (!cols) {
      const keys = [];
      rows.forEach(r => Object.keys(r).forEach(k => { if (!keys.includes(k)) keys.push(k); }));
      cols = keys.map(k => ({ key: k }));
    }
    const t = document.createElement("table");
    t.className = "data";
    const head = t.createTHead().insertRow();
    cols.forEach(c => { const th = document.createElement("th"); th.scope = "col"; th.textContent = c.label || c.key; head.appendChild(th); });
    const body = t.createTBody();
    rows.forEach(r => {
      const tr = body.insertRow();
      cols.forEach(c => {
        const td = tr.insertCell();
        const v = c.get ? c.get(r) : r[c.key];
        const out = c.fmt ? c.fmt(v, r) : cell(c.key, v);
        if (out instanceof Node) td.appendChild(out); else td.textContent = out;
        if (typeof v === "number") td.className = "num";
      });
    });
    el.replaceChildren(t);
    return { cols, rows };
  }

  function csv(rows, cols) {
    const esc = s => { s = String(s ?? ""); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    const lines = [cols.map(c => esc(c.label || c.key)).join(",")];
    rows.forEach(r => lines.push(cols.map(c => {
      const v = c.get ? c.get(r) : r[c.key];
      return esc(typeof v === "object" && v !== null ? JSON.stringify(v) : v);
    }).join(",")));
    return lines.join("\n") + "\n";
  }

  // "Download JSON / CSV" links for a chart's data.
  function downloads(el, name, json, rows, cols) {
    el.replaceChildren();
    el.className = "downloads";
    const link = (label, type, text, file) => {
      const a = document.createElement("a");
      a.textContent = label;
      a.download = file;
      a.href = URL.createObjectURL(new Blob([text], { type }));
      el.appendChild(a);
    };
    link("Download JSON", "application/json", JSON.stringify(json, null, 2), name + ".json");
    if (rows && rows.length) {
      if (!cols) { const keys = []; rows.forEach(r => Object.keys(r).forEach(k => { if (!keys.includes(k)) keys.push(k); })); cols = keys.map(k => ({ key: k })); }
      link("Download CSV", "text/csv", csv(rows, cols), name + ".csv");
    }
  }

  // ------------------------------------------------------------ SVG
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#475569", "#0d9488", "#9333ea"];
  const MODE_COLORS = { resident: "#15803d", mmap: "#2563eb", stream: "#b45309", infeasible: "#b91c1c" };

  function root(el, w, h, label) {
    const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label });
    s.appendChild(svg("title", {}, label));
    el.replaceChildren(s);
    return s;
  }

  // Stacked bars, one per `bars` entry ({label, segments:[{label, value}]}), on a
  // shared byte axis, with an optional budget line (bytes).
  function stackedBars(el, bars, opts) {
    opts = opts || {};
    const W = 900, left = 150, right = 30, barH = 30, gap = 14, top = 24;
    const legendRows = Math.ceil(new Set(bars.flatMap(b => b.segments.map(s => s.label))).size / 5);
    const H = top + bars.length * (barH + gap) + 28 + legendRows * 18;
    const s = root(el, W, H, opts.label || "stacked bar chart");
    const totals = bars.map(b => b.segments.reduce((a, x) => a + Math.max(0, x.value), 0));
    const max = Math.max(1, ...totals, opts.budget || 0) * 1.05;
    const x = v => left + (W - left - right) * v / max;
    const names = [];
    bars.forEach(b => b.segments.forEach(sg => { if (!names.includes(sg.label)) names.push(sg.label); }));
    const color = n => PALETTE[names.indexOf(n) % PALETTE.length];
    // axis ticks
    const step = niceStep(max / 6);
    for (let v = 0; v <= max; v += step) {
      s.appendChild(svg("line", { x1: x(v), x2: x(v), y1: top - 4, y2: top + bars.length * (barH + gap), stroke: "#e2e8f0" }));
      s.appendChild(svg("text", { x: x(v), y: top - 8, "text-anchor": "middle" }, bytes(v)));
    }
    bars.forEach((b, i) => {
      const y = top + i * (barH + gap);
      s.appendChild(svg("text", { x: left - 8, y: y + barH / 2 + 4, "text-anchor": "end" }, b.label));
      let acc = 0;
      b.segments.forEach(sg => {
        if (sg.value <= 0) return;
        const r = svg("rect", { x: x(acc), y, width: Math.max(0.5, x(acc + sg.value) - x(acc)), height: barH, fill: color(sg.label), "data-segment": sg.label });
        r.appendChild(svg("title", {}, `${sg.label}: ${bytes(sg.value)}`));
        s.appendChild(r);
        acc += sg.value;
      });
      s.appendChild(svg("text", { x: x(acc) + 4, y: y + barH / 2 + 4 }, bytes(acc)));
    });
    if (opts.budget) {
      const bx = x(opts.budget);
      s.appendChild(svg("line", { x1: bx, x2: bx, y1: top - 2, y2: top + bars.length * (barH + gap) - gap + 4, stroke: "#b91c1c", "stroke-width": 2, "stroke-dasharray": "6 3", "data-budget": opts.budget }));
      s.appendChild(svg("text", { x: bx + 4, y: top + bars.length * (barH + gap) - gap + 14, fill: "#b91c1c" }, "budget " + (opts.budgetLabel || bytes(opts.budget))));
    }
    let ly = H - legendRows * 18 + 4;
    names.forEach((n, i) => {
      const lx = left + (i % 5) * 150, yy = ly + Math.floor(i / 5) * 18;
      s.appendChild(svg("rect", { x: lx, y: yy - 9, width: 10, height: 10, fill: color(n) }));
      s.appendChild(svg("text", { x: lx + 14, y: yy }, n));
    });
    return s;
  }

  // Horizontal bars of signed values ({label, value, color, text}) with a zero line.
  function hbars(el, items, opts) {
    opts = opts || {};
    const W = 900, left = 230, right = 170, barH = 20, gap = 8, top = 22;
    const H = top + items.length * (barH + gap) + 10;
    const s = root(el, W, H, opts.label || "bar chart");
    const lo = Math.min(0, ...items.map(i => i.value)), hi = Math.max(0, ...items.map(i => i.value));
    const span = (hi - lo) || 1;
    const x = v => left + (W - left - right) * (v - lo) / span;
    const fmt = opts.fmt || num;
    s.appendChild(svg("line", { x1: x(0), x2: x(0), y1: top - 6, y2: H - 6, stroke: "#475569" }));
    s.appendChild(svg("text", { x: left, y: 12 }, opts.axis || ""));
    items.forEach((it, i) => {
      const y = top + i * (barH + gap);
      s.appendChild(svg("text", { x: left - 8, y: y + barH / 2 + 4, "text-anchor": "end" }, it.label));
      const x0 = x(Math.min(0, it.value)), x1 = x(Math.max(0, it.value));
      const r = svg("rect", { x: x0, y, width: Math.max(1, x1 - x0), height: barH, fill: it.color || PALETTE[0] });
      r.appendChild(svg("title", {}, `${it.label}: ${it.text || fmt(it.value)}`));
      s.appendChild(r);
      s.appendChild(svg("text", { x: Math.max(x1, x(0)) + 4, y: y + barH / 2 + 4 }, it.text || fmt(it.value)));
    });
    return s;
  }

  // Lines with markers: series [{name, points:[[x, y], ...]}]; log y when asked.
  function lines(el, series, opts) {
    opts = opts || {};
    const W = 900, H = 380, L = 92, R = 170, T = 20, B = 46;
    const s = root(el, W, H, opts.label || "line chart");
    const pts = series.flatMap(se => se.points);
    if (!pts.length) { s.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data")); return s; }
    const logY = !!opts.logY && pts.every(p => p[1] > 0);
    const fy = v => logY ? Math.log10(v) : v;
    let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
    let y0 = Math.min(...pts.map(p => fy(p[1]))), y1 = Math.max(...pts.map(p => fy(p[1])));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const px = v => L + (W - L - R) * (v - x0) / (x1 - x0);
    const py = v => H - B - (H - T - B) * (fy(v) - y0) / (y1 - y0);
    s.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#475569" }));
    s.appendChild(svg("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#475569" }));
    const xs = niceStep((x1 - x0) / 8);
    for (let v = Math.ceil(x0 / xs) * xs; v <= x1 + 1e-9; v += xs) {
      s.appendChild(svg("text", { x: px(v), y: H - B + 16, "text-anchor": "middle" }, num(+v.toFixed(6))));
    }
    for (let k = 0; k <= 5; k++) {
      const fv = y0 + (y1 - y0) * k / 5, v = logY ? Math.pow(10, fv) : fv;
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), stroke: "#eef2f7" }));
      s.appendChild(svg("text", { x: L - 6, y: py(v) + 4, "text-anchor": "end" }, num(v)));
    }
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, opts.xLabel || ""));
    s.appendChild(svg("text", { x: 12, y: T + (H - T - B) / 2, transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, "text-anchor": "middle" }, (opts.yLabel || "") + (logY ? " (log)" : "")));
    series.forEach((se, i) => {
      const c = se.color || PALETTE[i % PALETTE.length];
      const ps = se.points.slice().sort((a, b) => a[0] - b[0]);
      if (ps.length > 1) s.appendChild(svg("polyline", { points: ps.map(p => px(p[0]) + "," + py(p[1])).join(" "), fill: "none", stroke: c, "stroke-width": 2 }));
      ps.forEach(p => {
        const m = svg("circle", { cx: px(p[0]), cy: py(p[1]), r: 3.5, fill: c });
        m.appendChild(svg("title", {}, `${se.name}: x=${num(p[0])}, y=${num(p[1])}`));
        s.appendChild(m);
      });
      s.appendChild(svg("rect", { x: W - R + 12, y: T + i * 18, width: 10, height: 10, fill: c }));
      s.appendChild(svg("text", { x: W - R + 26, y: T + i * 18 + 9 }, se.name));
    });
    return s;
  }

  // Latency histograms as small multiples on one shared log-scaled time axis: `hists`
  // [{name, buckets:[{lo_us, hi_us, count}]}] (hi_us null: open-ended last bucket).
  function histograms(el, hists, opts) {
    opts = opts || {};
    const W = 900, L = 230, R = 30, T = 22, panelH = 78, gap = 14, B = 34;
    const H = T + hists.length * (panelH + gap) + B;
    const s = root(el, W, H, opts.label || "histograms");
    if (!hists.length) { s.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data")); return s; }
    const STEP = Math.pow(2, 0.25);
    const span = b => [b.lo_us > 0 ? b.lo_us : (b.hi_us / STEP), b.hi_us !== null ? b.hi_us : b.lo_us * STEP];
    const all = hists.flatMap(h => h.buckets.map(span));
    const x0 = Math.log10(Math.min(...all.map(a => a[0]))), x1 = Math.log10(Math.max(...all.map(a => a[1])));
    const px = v => L + (W - L - R) * (Math.log10(v) - x0) / ((x1 - x0) || 1);
    const yBase = T + hists.length * (panelH + gap) - gap;
    for (let d = Math.floor(x0); d <= Math.ceil(x1); d++) {
      [1, 2, 5].forEach(m => {
        const v = m * Math.pow(10, d);
        if (Math.log10(v) < x0 - 1e-9 || Math.log10(v) > x1 + 1e-9) return;
        s.appendChild(svg("line", { x1: px(v), x2: px(v), y1: T - 4, y2: yBase, stroke: m === 1 ? "#cbd5e1" : "#eef2f7" }));
        s.appendChild(svg("text", { x: px(v), y: yBase + 14, "text-anchor": "middle" }, num(v)));
      });
    }
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, opts.xLabel || ""));
    hists.forEach((h, i) => {
      const top = T + i * (panelH + gap), base = top + panelH;
      const c = PALETTE[i % PALETTE.length];
      const max = Math.max(1, ...h.buckets.map(b => b.count));
      const total = h.buckets.reduce((a, b) => a + b.count, 0) || 1;
      s.appendChild(svg("text", { x: L - 8, y: top + panelH / 2, "text-anchor": "end" }, h.name));
      s.appendChild(svg("text", { x: L - 8, y: top + panelH / 2 + 14, "text-anchor": "end", fill: "#64748b" }, `peak ${num(max)} steps`));
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: base, y2: base, stroke: "#475569" }));
      h.buckets.forEach(b => {
        if (!b.count) return;
        const [lo, hi] = span(b);
        const hgt = (panelH - 4) * b.count / max;
        const r = svg("rect", { x: px(lo), y: base - hgt, width: Math.max(1, px(hi) - px(lo) - 0.5), height: hgt, fill: c, "data-count": b.count });
        r.appendChild(svg("title", {}, `${h.name}: ${num(b.lo_us)}–${b.hi_us === null ? "∞" : num(b.hi_us)} µs: ${num(b.count)} steps (${(100 * b.count / total).toFixed(1)} %)`));
        s.appendChild(r);
      });
    });
    return s;
  }

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  }

  function modeBadge(mode) {
    const sp = document.createElement("span");
    sp.className = "mode mode-" + mode;
    sp.textContent = mode;
    return sp;
  }

  // ------------------------------------------------------------ page state in the URL
  function query() { return new URLSearchParams(location.search); }
  function setQuery(params) { history.replaceState(null, "", location.pathname + "?" + params.toString()); }

  function option(sel, value, label) {
    const o = document.createElement("option");
    o.value = value; o.textContent = label || value;
    sel.appendChild(o);
    return o;
  }

  let catalogPromise;
  function catalog() { return catalogPromise || (catalogPromise = api("/api/catalog")); }

  // The model / context / weights / KV controls of Plan, Devices and Compare. Calls
  // `onChange` (debounced) when any moves; `params()` gives the Plan API query.
  async function planControls(el, onChange, initial) {
    const cat = await catalog();
    el.innerHTML = `
      <label>model <select data-k="model"></select></label>
      <label>upload YAML <input type="file" accept=".yaml,.yml" data-upload></label>
      <label>or path under an allowed dir <input type="text" size="22" data-path placeholder="models/x.gguf"></label>
      <label>context tokens <input type="number" min="1" step="512" data-k="context"></label>
      <label>&nbsp;<input type="range" min="9" max="20" step="0.25" data-ctxlog aria-label="context (log scale)"></label>
      <label>weights <select data-k="weights"></select></label>
      <label>KV codec <select data-k="kv_codec"></select></label>
      <label>KV bits <select data-k="kv_bits"></select></label>
      <label class="check"><input type="checkbox" data-k="strip_audio"> strip audio</label>
      <label class="check"><input type="checkbox" data-k="strip_vision"> strip vision</label>`;
    const q = initial || query();
    const m = $("[data-k=model]", el);
    cat.models.forEach(x => option(m, x.name));
    cat.uploads.forEach(u => option(m, u.id, `${u.name} (${u.id})`));
    const files = await api("/api/files?ext=gguf,safetensors,yaml,yml").catch(() => ({ files: [] }));
    files.files.forEach(f => option(m, f.path, f.path.split("/").slice(-2).join("/")));
    const w = $("[data-k=weights]", el);
    cat.devices.weight_formats.forEach(f => option(w, f.name, `${f.name} (${num(f.bits_per_weight)} b/w)`));
    const kc = $("[data-k=kv_codec]", el);
    cat.codecs.forEach(c => option(kc, c.name));
    option(kc, "none", "none (flat what-if bits)");
    const kb = $("[data-k=kv_bits]", el);
    const fillBits = () => {
      const c = cat.codecs.find(c => c.name === kc.value);
      const prev = kb.value;
      kb.replaceChildren();
      const bits = c ? c.bits : [2, 3, 4, 5, 6, 8, 16];
      bits.forEach(b => option(kb, String(b)));
      kb.value = bits.map(String).includes(prev) ? prev : (bits.includes(4) ? "4" : String(bits[bits.length - 1]));
    };
    const ctx = $("[data-k=context]", el), ctxlog = $("[data-ctxlog]", el);
    const set = (k, v, dflt) => { const e = $(`[data-k=${k}]`, el); const val = v ?? dflt; if (e.type === "checkbox") e.checked = val === true || val === "true"; else e.value = val; };
    const pathVal = q.get("model") || "gemma4-e2b";
    if (![...m.options].some(o => o.value === pathVal)) option(m, pathVal);
    set("model", pathVal);
    set("context", q.get("context"), "32768");
    set("weights", q.get("weights"), "int4");
    set("kv_codec", q.get("kv_codec"), "turbo-mse");
    fillBits();
    if (q.get("kv_bits")) set("kv_bits", q.get("kv_bits"));
    set("strip_audio", q.get("strip_audio"), true);
    set("strip_vision", q.get("strip_vision"), false);
    ctxlog.value = Math.log2(+ctx.value || 32768);
    const fire = debounce(onChange, 120);
    el.addEventListener("input", e => {
      if (e.target === ctxlog) ctx.value = Math.round(Math.pow(2, +ctxlog.value) / 256) * 256;
      if (e.target === ctx) ctxlog.value = Math.log2(+ctx.value || 1);
      if (e.target === kc) fillBits();
      if (e.target.dataset.upload !== undefined || e.target.dataset.path !== undefined) return;
      fire();
    });
    el.addEventListener("change", e => { if (e.target.type === "checkbox" || e.target.tagName === "SELECT") fire(); });
    $("[data-path]", el).addEventListener("change", e => {
      const p = e.target.value.trim();
      if (!p) return;
      if (![...m.options].some(o => o.value === p)) option(m, p);
      m.value = p; fire();
    });
    $("[data-upload]", el).addEventListener("change", async e => {
      const f = e.target.files[0];
      if (!f) return;
      try {
        const r = await api("/api/models", { method: "POST", body: await f.text(), headers: { "content-type": "text/plain" } });
        option(m, r.id, `${r.name} (${r.id})`);
        m.value = r.id; fire();
      } catch (err) { status(err.message, true); }
    });
    return {
      params() {
        const p = new URLSearchParams();
        ["model", "context", "weights", "kv_codec", "kv_bits"].forEach(k => p.set(k, $(`[data-k=${k}]`, el).value));
        if (p.get("kv_codec") === "none") p.delete("kv_codec"), p.set("kv_codec", "none");
        p.set("strip_audio", $("[data-k=strip_audio]", el).checked);
        p.set("strip_vision", $("[data-k=strip_vision]", el).checked);
        return p;
      },
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    $$("[data-nav]").forEach(a => { if (a.dataset.nav === page) a.classList.add("active"); });
  });

  return { $, $$, api, debounce, status, bytes, num, cell, table, csv, downloads, svg, stackedBars, hbars, lines, histograms, modeBadge, query, setQuery, option, catalog, planControls, PALETTE, MODE_COLORS };
})();
