"use strict";
(async () => {
  const GB = 1e9;
  let last = null;
  const budgetEl = D.$("#budget");
  const q = D.query();
  if (q.get("budget_gb")) budgetEl.value = q.get("budget_gb");
  const render = () => {
    if (!last) return;
    const r = last;
    const budget = (+budgetEl.value || 0) * GB;
    const segs = r.components.filter(c => c.bytes > 0).map(c => ({ label: c.name, value: c.bytes }));
    D.stackedBars(D.$("#chart"), [{ label: r.model.name, segments: segs }], { budget, budgetLabel: `${budgetEl.value} GB`, label: `peak memory of ${r.model.name} at ${r.context_tokens} tokens` });
    const total = segs.reduce((a, s) => a + s.value, 0);
    D.$("#headline").textContent = `${r.model.name} · ${r.context_tokens.toLocaleString()} tokens · total ${D.bytes(total)} · ` +
      (total <= budget ? `fits the ${budgetEl.value} GB budget with ${D.bytes(budget - total)} to spare` : `over the ${budgetEl.value} GB budget by ${D.bytes(total - budget)}`);
    const t = D.table(D.$("#components"), r.components, [
      { key: "name", label: "component" }, { key: "bytes" }, { key: "exact" }, { key: "note" }]);
    D.downloads(D.$("#chart-dl"), "plan-" + r.model.name, r, t.rows, t.cols);
    D.table(D.$("#totals"), Object.entries(r.totals).map(([k, v]) => ({ total: k, value: v })), [
      { key: "total" }, { key: "value", fmt: (v, row) => D.cell(row.total, v) }]);
    D.table(D.$("#params"), Object.entries(r.params).map(([k, v]) => ({ parameter: k, value: v })));
    D.$("#summary").replaceChildren(...r.summary.lines.map(l => { const li = document.createElement("li"); li.textContent = l; return li; }));
    D.$("#warnings").replaceChildren(...r.warnings.map(l => { const li = document.createElement("li"); li.textContent = "⚠ " + l; return li; }));
  };
  let seq = 0;
  const update = async () => {
    const p = controls.params();
    p.set("budget_gb", budgetEl.value);
    D.setQuery(p);
    const mine = ++seq;
    const t0 = performance.now();
    try {
      const r = await D.api("/api/plan?" + p.toString());
      if (mine !== seq) return;
      last = r;
      render();
      D.status(`planned in ${Math.round(performance.now() - t0)} ms (${r.model_origin})`);
    } catch (e) { if (mine === seq) D.status(e.message, true); }
  };
  const controls = await D.planControls(D.$("#controls"), update);
  budgetEl.addEventListener("input", () => { render(); const p = D.query(); p.set("budget_gb", budgetEl.value); D.setQuery(p); });
  update();
})();
