"use strict";
(async () => {
  const cat = await D.catalog();
  const q = D.query();
  const model = D.$("#model");
  cat.models.forEach(m => D.option(model, m.name));
  model.value = q.get("model") || "gemma4-e2b";
  if (q.get("context")) D.$("#context").value = q.get("context");
  const chosen = (q.get("codecs") || "turbo-mse,q4_0,q8_0,kivi2").split(",");
  const chosenBits = (q.get("bits") || "2,3,4,5,6,8").split(",");
  const box = (parent, name, val, on) => {
    const l = document.createElement("label"); l.className = "check";
    const i = document.createElement("input"); i.type = "checkbox"; i.value = val; i.checked = on; i.name = name;
    l.append(i, " " + val); parent.appendChild(l);
  };
  cat.codecs.forEach(c => box(D.$("#codecs"), "codec", c.name, chosen.includes(c.name)));
  [1, 2, 3, 4, 5, 6, 7, 8].forEach(b => { box(D.$("#bits"), "bit", String(b), chosenBits.includes(String(b))); D.option(D.$("#membits"), String(b)); });
  D.$("#membits").value = q.get("membits") || "4";
  const checked = n => D.$$(`input[name=${n}]:checked`).map(i => i.value);
  let last = null, seq = 0;
  const METRIC_LOG = { nmse: true, attn_kl: true, cosine: false };
  const render = () => {
    if (!last) return;
    const metric = D.$("#metric").value;
    // One colour per codec, the same in every chart of the page.
    const color = c => D.PALETTE[cat.codecs.findIndex(x => x.name === c) % D.PALETTE.length];
    const byCodec = {};
    last.points.forEach(p => (byCodec[p.codec] = byCodec[p.codec] || []).push([p.bits_per_value, p[metric]]));
    D.lines(D.$("#chart"), Object.entries(byCodec).map(([name, points]) => ({ name, points, color: color(name) })),
      { xLabel: "stored bits per value (from encoded bytes)", yLabel: metric, logY: METRIC_LOG[metric], label: `${metric} vs bits per value` });
    const t = D.table(D.$("#points"), last.points);
    D.downloads(D.$("#chart-dl"), "kv-sweep", last, t.rows, t.cols);
    const mb = +D.$("#membits").value;
    const mem = last.points.filter(p => p.bits === mb);
    D.hbars(D.$("#mem"), mem.map(p => ({ label: p.codec, value: p.compressed_bytes, color: color(p.codec), text: `${D.bytes(p.compressed_bytes)} (×${D.num(p.ratio)})` })),
      { fmt: D.bytes, label: `KV cache bytes at ${last.seq_len} tokens, ${mb} bits`, axis: `KV cache at ${last.seq_len.toLocaleString()} tokens, ${mb}-bit codecs (× = smaller than the bf16 cache of ${D.bytes(mem.length ? mem[0].baseline_bytes : 0)})` });
    const mt = D.table(D.$("#memtable"), mem, [{ key: "codec" }, { key: "bits" }, { key: "compressed_bytes" }, { key: "baseline_bytes" }, { key: "ratio" }, { key: "bits_per_value" }]);
    D.downloads(D.$("#mem-dl"), "kv-memory", mem, mt.rows, mt.cols);
  };
  const update = async () => {
    const p = new URLSearchParams({ models: model.value, context: D.$("#context").value, samples: D.$("#samples").value, codecs: checked("codec").join(","), bits: checked("bit").join(",") });
    const page = new URLSearchParams({ model: model.value, context: D.$("#context").value, codecs: checked("codec").join(","), bits: checked("bit").join(","), membits: D.$("#membits").value });
    D.setQuery(page);
    const mine = ++seq;
    D.status("sweeping…");
    try {
      const r = await D.api("/api/kv/sweep?" + p.toString());
      if (mine !== seq) return;
      last = r; render();
      D.status(`${r.points.length} points` + (r.skipped.length ? `, ${r.skipped.length} skipped (width not supported)` : ""));
    } catch (e) { if (mine === seq) D.status(e.message, true); }
  };
  document.querySelector(".controls").addEventListener("change", e => {
    if (e.target.id === "metric" || e.target.id === "membits") { render(); const pq = D.query(); pq.set("membits", D.$("#membits").value); D.setQuery(pq); } else debounced();
  });
  const debounced = D.debounce(update, 200);
  D.$("#context").addEventListener("input", debounced);
  D.$("#cross").addEventListener("click", async () => {
    D.status("sweeping every built-in model at 4 bits…");
    try {
      const codecs = checked("codec").filter(c => cat.codecs.find(x => x.name === c).bits.includes(4));
      const r = await D.api("/api/kv/sweep?" + new URLSearchParams({ models: "all", bits: "4", codecs: codecs.join(","), context: D.$("#context").value, samples: "128" }));
      const metric = D.$("#metric").value;
      D.hbars(D.$("#xchart"), r.points.map(p => ({ label: `${p.model} · ${p.codec}`, value: p[metric], color: D.PALETTE[cat.codecs.findIndex(x => x.name === p.codec) % D.PALETTE.length] })),
        { label: `${metric} at 4 bits across models`, axis: `${metric} at 4 bits` });
      const t = D.table(D.$("#xtable"), r.points);
      D.downloads(D.$("#x-dl"), "kv-cross-model", r, t.rows, t.cols);
      D.status(`${r.points.length} model × codec points at 4 bits`);
    } catch (e) { D.status(e.message, true); }
  });
  const caps = await D.api("/api/files?ext=safetensors,npy").catch(() => ({ files: [] }));
  caps.files.forEach(f => D.option(D.$("#capfile"), f.path, f.path.split("/").slice(-2).join("/")));
  const showCompare = r => {
      const metric = D.$("#metric").value;
      const color = c => D.PALETTE[cat.codecs.findIndex(x => x.name === c) % D.PALETTE.length];
      const by = {};
      r.rows.forEach(p => (by[p.codec] = by[p.codec] || []).push([p.bits_per_value, p[metric]]));
      D.lines(D.$("#capchart"), Object.entries(by).map(([name, points]) => ({ name, points, color: color(name) })),
        { xLabel: "stored bits per value", yLabel: metric, logY: METRIC_LOG[metric], label: `${metric} vs bits on captured KV` });
      const t = D.table(D.$("#captable"), r.rows, ["codec", "bits", "bits_per_value", "nmse", "cosine", "attn_kl", "attn_rel_err", "heads"].map(k => ({ key: k })));
      D.downloads(D.$("#cap-dl"), "kv-compare-captured", r, t.rows, t.cols);
      D.status(`${r.rows.length} codec × bits rows on ${r.config.data}` + (r.skipped.length ? `, ${r.skipped.length} skipped` : ""));
  };
  D.$("#capgo").addEventListener("click", async () => {
    const data = D.$("#cappath").value.trim() || D.$("#capfile").value;
    if (!data) { D.status("choose a captured KV file", true); return; }
    D.status("comparing on " + data + "…");
    try {
      showCompare(await D.api("/api/kv/compare?" + new URLSearchParams({ data, codecs: checked("codec").join(","), bits: checked("bit").join(",") })));
    } catch (e) { D.status(e.message, true); }
  });
  // Capture from a GGUF on the server (one at a time, cancellable), then the same comparison.
  const ggufs = await D.api("/api/files?ext=gguf").catch(() => ({ files: [] }));
  ggufs.files.forEach(f => D.option(D.$("#capmodel"), f.path, f.path.split("/").slice(-2).join("/")));
  let capEs = null;
  const capShow = st => {
    const bar = D.$("#capbar");
    bar.max = st.total || 1; bar.value = Math.min(st.done, st.total || 1);
    D.$("#capphase").textContent = `${st.state}${st.phase ? " · " + st.phase : ""} · ${st.done.toLocaleString()}${st.total ? " / " + st.total.toLocaleString() : ""} ${st.unit} · ${st.seconds.toFixed(1)} s`;
    const running = st.state === "running";
    D.$("#capstart").disabled = running; D.$("#capcancel").disabled = !running;
    if (st.state === "failed") D.status(st.error, true);
    if (st.state === "cancelled") D.status("capture cancelled");
    if (st.state === "done" && st.report) {
      showCompare(st.report.compare);
      const c = st.report.capture;
      D.status(`captured ${c.n_tokens} tokens × ${c.n_layers} layers (${c.n_kv_heads} KV heads × ${c.head_dim}) and compared ${st.report.compare.rows.length} codec × bits rows`);
    }
  };
  const capListen = () => {
    if (capEs) capEs.close();
    capEs = new EventSource("/api/kv/capture/events");
    capEs.addEventListener("status", e => { const st = JSON.parse(e.data); capShow(st); if (st.state !== "running") { capEs.close(); capEs = null; } });
    capEs.onerror = () => { if (capEs) { capEs.close(); capEs = null; } };
  };
  D.$("#capstart").addEventListener("click", async () => {
    const path = D.$("#capmodelpath").value.trim() || D.$("#capmodel").value;
    if (!path) { D.status("choose a GGUF model", true); return; }
    const body = { path, max_tokens: +D.$("#captokens").value, codecs: checked("codec").join(","), bits: checked("bit").join(",") };
    const text = D.$("#captext").value;
    if (text.trim()) body.text = text;
    try {
      await D.api("/api/kv/capture", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      D.status("capturing KV from " + path + "…");
      capListen();
    } catch (e) { D.status(e.message, true); }
  });
  D.$("#capcancel").addEventListener("click", async () => {
    try { await D.api("/api/kv/capture/cancel", { method: "POST" }); } catch (e) { D.status(e.message, true); }
  });
  const capSt = await D.api("/api/kv/capture").catch(() => null);
  if (capSt && capSt.state === "running") { capShow(capSt); capListen(); }
  update();
})();
