"use strict";
(async () => {
  const q = D.query();
  ["ram", "flash", "tps"].forEach(id => { const v = q.get({ ram: "ram_mb", flash: "flash_gbps", tps: "target_tps" }[id]); if (v) D.$("#" + id).value = v; });
  let seq = 0;
  const update = async () => {
    const p = controls.params();
    p.set("devices", "all");
    const ram = D.$("#ram").value, flash = D.$("#flash").value;
    if (ram && flash) { p.set("ram_mb", ram); p.set("flash_gbps", flash); }
    if (D.$("#tps").value) p.set("target_tps", D.$("#tps").value);
    D.setQuery(p);
    const mine = ++seq;
    try {
      const r = await D.api("/api/plan?" + p.toString());
      if (mine !== seq) return;
      const devs = r.devices;
      D.hbars(D.$("#chart"), devs.map(d => ({ label: d.name || d.slug, value: d.headroom_bytes, color: D.MODE_COLORS[d.mode] || "#64748b", text: `${d.mode} · ${D.bytes(d.headroom_bytes)}` })),
        { label: "headroom per device, coloured by verdict", fmt: D.bytes, axis: "headroom (green resident · blue mmap · amber stream · red infeasible)" });
      // Every scalar field of the assessment, so fields the planner adds show up here.
      const scalar = devs.length ? Object.keys(devs[0]).filter(k => devs.every(d => d[k] === null || typeof d[k] !== "object" || false)) : [];
      const cols = scalar.map(k => k === "mode" ? { key: k, fmt: v => D.modeBadge(v) } : { key: k });
      const t = D.table(D.$("#devices"), devs, cols);
      D.downloads(D.$("#chart-dl"), "devices-" + r.model.name, r.devices, t.rows, t.cols);
      D.$("#notes").replaceChildren(...devs.flatMap(d => (d.notes || []).map(n => { const li = document.createElement("li"); li.textContent = `${d.slug}: ${n}`; return li; })));
      const mit = devs.flatMap(d => (d.mitigations || []).map(m => Object.assign({ device: d.slug }, m)));
      if (mit.length) D.table(D.$("#mitigations"), mit); else D.$("#mitigations").textContent = "none needed: every device has a viable mode";
      D.table(D.$("#modes"), devs.flatMap(d => (d.modes || []).map(m => Object.assign({ device: d.slug }, m))),
        null);
      D.status(`${r.model.name} at ${r.context_tokens.toLocaleString()} tokens: GO ${r.summary.go.length}, NO-GO ${r.summary.no_go.length}`);
    } catch (e) { if (mine === seq) D.status(e.message, true); }
  };
  const controls = await D.planControls(D.$("#controls"), update);
  ["ram", "flash", "tps"].forEach(id => D.$("#" + id).addEventListener("input", D.debounce(update, 150)));
  update();
})();
