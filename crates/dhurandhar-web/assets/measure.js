"use strict";
(async () => {
  const cat = await D.catalog();
  cat.models.forEach(m => D.option(D.$("#model"), m.name));
  D.$("#model").value = "gemma4-e2b";
  cat.profile_patterns.forEach(p => {
    const l = document.createElement("label"); l.className = "check";
    const i = document.createElement("input"); i.type = "checkbox"; i.name = "pattern"; i.value = p; i.checked = true;
    l.append(i, " " + p); D.$("#patterns").appendChild(l);
  });
  const checked = n => D.$$(`input[name=${n}]:checked`).map(i => i.value);
  let es = null;
  const show = st => {
    const bar = D.$("#bar");
    bar.max = st.total || 1; bar.value = Math.min(st.done, st.total || 1);
    D.$("#phase").textContent = `${st.state}${st.phase ? " · " + st.phase : ""} · ${st.done.toLocaleString()}${st.total ? " / " + st.total.toLocaleString() : ""} ${st.unit} · ${st.seconds.toFixed(1)} s`;
    const running = st.state === "running";
    D.$("#start").disabled = running; D.$("#cancel").disabled = !running;
    if (st.state === "failed") D.status(st.error, true);
    if (st.state === "cancelled") D.status("cancelled");
    if (st.state === "done" && st.report) { D.status("done"); results(st.report); }
  };
  const results = r => {
    const rows = r.results.map(x => Object.assign({ run: `${x.pattern} ${x.mode}` }, x));
    const items = [];
    rows.forEach((x, i) => [["p50", x.p50_us], ["p99", x.p99_us], ["p99.9", x.p999_us]].forEach(([k, v], j) => {
      if (v !== null) items.push({ label: `${x.run} ${k}`, value: v, color: D.PALETTE[i % 12], text: D.num(v) + " µs" });
    }));
    // Histograms: the report's fixed log-spaced buckets, one panel per run.
    const hs = r.histograms || [];
    const twin = h => hs.some(o => o !== h && o.pattern === h.pattern && o.mode === h.mode);
    const hists = hs.map(h => ({ name: `${h.pattern} ${h.mode}${twin(h) ? " " + h.advice : ""}`, samples: h.samples, buckets: h.buckets }));
    D.histograms(D.$("#hist"), hists, { label: "decode step latency histograms", xLabel: "µs per decode step (log scale)" });
    const hrows = hists.flatMap(h => h.buckets.map(b => ({ run: h.name, lo_us: b.lo_us, hi_us: b.hi_us, count: b.count, share: b.count / (h.samples || 1) })));
    const ht = D.table(D.$("#hist-table"), hrows);
    D.downloads(D.$("#hist-dl"), "mmap-profile-histograms", hs, ht.rows, ht.cols);
    D.hbars(D.$("#chart"), items, { label: "decode step latency percentiles", axis: "µs per decode step" });
    const t = D.table(D.$("#results"), rows, ["run", "tokens", "tokens_per_s", "mb_per_s", "p50_us", "p99_us", "p999_us", "mean_us", "max_us", "major_faults", "minor_faults", "resident_fraction_before", "resident_fraction_after", "note"].map(k => ({ key: k })));
    D.downloads(D.$("#chart-dl"), "mmap-profile", r, t.rows, t.cols);
    D.table(D.$("#verdict"), [r.verdict]);
    D.table(D.$("#memory"), r.memory.budgets || []);
  };
  const listen = () => {
    if (es) es.close();
    es = new EventSource("/api/profile/events");
    es.addEventListener("status", e => {
      const st = JSON.parse(e.data);
      show(st);
      if (st.state !== "running") { es.close(); es = null; }
    });
    es.onerror = () => { if (es) { es.close(); es = null; } };
  };
  D.$("#start").addEventListener("click", async () => {
    const body = { num_tokens: +D.$("#tokens").value, modes: checked("mode"), patterns: checked("pattern") };
    const path = D.$("#path").value.trim();
    if (path) { body.path = path; body.tensor = D.$("#tensor").value.trim(); }
    else { body.model = D.$("#model").value; body.scale = +D.$("#scale").value; }
    try {
      await D.api("/api/profile", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      D.status("running…");
      listen();
    } catch (e) { D.status(e.message, true); }
  });
  D.$("#cancel").addEventListener("click", async () => {
    try { await D.api("/api/profile/cancel", { method: "POST" }); } catch (e) { D.status(e.message, true); }
  });
  // Show a run that is already going (or the last one).
  const st = await D.api("/api/profile");
  show(st);
  if (st.state === "running") listen();
})();
