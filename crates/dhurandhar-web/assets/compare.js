"use strict";
(async () => {
  const cat = await D.catalog();
  const GB = 1e9;
  let last = null;
  const configsEl = D.$("#configs");
  const row = init => {
    const d = document.createElement("div");
    d.className = "config";
    d.innerHTML = `<label>model <select data-k="model"></select></label>
      <label>context <input type="number" data-k="context" min="1" step="1024"></label>
      <label>weights <select data-k="weights"></select></label>
      <label>KV codec <select data-k="kv_codec"></select></label>
      <label>KV bits <input type="number" data-k="kv_bits" min="1" max="8" step="1"></label>
      <label>device <select data-k="devices"></select></label>
      <button data-remove aria-label="remove configuration">✕</button>`;
    cat.models.forEach(m => D.option(D.$("[data-k=model]", d), m.name));
    cat.devices.weight_formats.forEach(f => D.option(D.$("[data-k=weights]", d), f.name));
    cat.codecs.forEach(c => D.option(D.$("[data-k=kv_codec]", d), c.name));
    cat.devices.devices.forEach(x => D.option(D.$("[data-k=devices]", d), x.slug, x.name));
    const v = Object.assign({ model: "gemma4-e2b", context: "32768", weights: "int4", kv_codec: "turbo-mse", kv_bits: "4", devices: cat.devices.devices[0].slug }, init);
    D.$$("[data-k]", d).forEach(e => { if (v[e.dataset.k] !== undefined && v[e.dataset.k] !== null) e.value = v[e.dataset.k]; });
    D.$("[data-remove]", d).addEventListener("click", () => { if (configsEl.children.length > 1) { d.remove(); update(); } });
    configsEl.appendChild(d);
  };
  const configs = () => D.$$(".config", configsEl).map(d => {
    const p = new URLSearchParams();
    D.$$("[data-k]", d).forEach(e => { if (e.value !== "") p.set(e.dataset.k, e.value); });
    return p.toString();
  });
  const render = () => {
    if (!last) return;
    const budget = +D.$("#budget").value * GB;
    const items = last.configs;
    const label = (c, i) => `#${i + 1} ${c.report.model.name} ${Math.round(c.report.context_tokens / 1024)}k`;
    D.stackedBars(D.$("#chart"), items.map((c, i) => ({ label: label(c, i), segments: c.report.components.filter(x => x.bytes > 0).map(x => ({ label: x.name, value: x.bytes })) })), { budget, budgetLabel: `${D.$("#budget").value} GB`, label: "peak memory per configuration" });
    // One column per configuration, one row per measure.
    const dev = c => c.report.devices[0] || {};
    const measures = [
      ["model", c => c.report.model.name], ["context tokens", c => c.report.context_tokens],
      ["weight format", c => c.report.weight_format.name], ["KV", c => `${c.report.kv.codec || "flat"} @ ${c.report.kv.bits} bits (${D.num(c.report.kv.bits_per_value)} b/value)`],
      ...items[0].report.components.map(x => [x.name + " bytes", c => (c.report.components.find(y => y.name === x.name) || {}).bytes]),
      ["resident total bytes", c => c.report.totals.resident_bytes],
      ["device", c => dev(c).name], ["verdict", c => dev(c).mode], ["headroom bytes", c => dev(c).headroom_bytes],
      ["decode ceiling tok/s", c => dev(c).decode_tps_ceiling],
      ["fits budget line", c => c.report.totals.resident_bytes <= budget],
    ];
    const rows = measures.map(([name, f]) => { const r = { measure: name }; items.forEach((c, i) => { r["#" + (i + 1)] = f(c); }); return r; });
    const cols = [{ key: "measure" }, ...items.map((c, i) => ({ key: "#" + (i + 1), label: label(c, i), fmt: (v, r) => r.measure === "verdict" && v ? D.modeBadge(v) : D.cell(r.measure, v) }))];
    const t = D.table(D.$("#table"), rows, cols);
    D.downloads(D.$("#chart-dl"), "compare", last, t.rows, t.cols);
  };
  let seq = 0;
  const update = async () => {
    const cs = configs();
    const p = new URLSearchParams();
    cs.forEach(c => p.append("c", c));
    p.set("budget_gb", D.$("#budget").value);
    D.setQuery(p);
    p.delete("budget_gb");
    const mine = ++seq;
    try {
      const r = await D.api("/api/compare?" + p.toString());
      if (mine !== seq) return;
      last = r; render();
      D.status(`${r.configs.length} configurations`);
    } catch (e) { if (mine === seq) D.status(e.message, true); }
  };
  const q = D.query();
  if (q.get("budget_gb")) D.$("#budget").value = q.get("budget_gb");
  const initial = q.getAll("c");
  if (initial.length) initial.forEach(c => row(Object.fromEntries(new URLSearchParams(c))));
  else { row({}); row({ model: "qwen2.5-0.5b", context: "8192", kv_codec: "q8_0", kv_bits: "8" }); }
  const fire = D.debounce(update, 150);
  configsEl.addEventListener("input", fire);
  configsEl.addEventListener("change", fire);
  D.$("#add").addEventListener("click", () => { row({}); update(); });
  D.$("#budget").addEventListener("input", () => { render(); const p = D.query(); p.set("budget_gb", D.$("#budget").value); D.setQuery(p); });
  update();
})();
