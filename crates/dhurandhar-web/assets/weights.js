"use strict";
(async () => {
  const files = await D.api("/api/files?ext=dhp");
  files.files.forEach(f => D.option(D.$("#file"), f.path, `${f.path.split("/").slice(-2).join("/")} (${D.bytes(f.bytes)})`));
  const q = D.query();
  const load = async path => {
    if (!path) return;
    D.setQuery(new URLSearchParams({ path }));
    try {
      const r = await D.api("/api/pack/stats?" + new URLSearchParams({ path }));
      const res = r;
      const summary = Object.assign({}, res);
      delete summary.tensors; delete summary.removed; delete summary.skipped;
      D.table(D.$("#summary"), [summary]);
      const rows = res.tensors.map(t => Object.assign({ ratio: t.input_bytes ? t.output_bytes / t.input_bytes : null }, t));
      const top = rows.slice(0, 60);
      D.hbars(D.$("#chart"), top.map(t => ({ label: t.name.length > 34 ? "…" + t.name.slice(-33) : t.name, value: t.bits_per_weight, color: t.mode.includes("quant") ? D.PALETTE[2] : D.PALETTE[0], text: `${D.num(t.bits_per_weight)} b/w · ratio ${D.num(t.ratio)}` })),
        { label: "stored bits per weight per tensor", axis: rows.length > top.length ? `first ${top.length} of ${rows.length} tensors (all in the table)` : "bits per weight" });
      const t = D.table(D.$("#tensors"), rows, ["name", "dtype", "shape", "mode", "input_bytes", "output_bytes", "ratio", "bits_per_weight", "rel_error_base", "rel_error_with_residual", "max_error_base", "residual_count", "note"].map(k => ({ key: k })));
      D.downloads(D.$("#chart-dl"), "pack-stats", r, t.rows, t.cols);
      if (res.skipped.length) D.table(D.$("#skipped"), res.skipped.map(([name, why]) => ({ name, why }))); else D.$("#skipped").textContent = "none";
      D.status(`${res.tensors.length} tensors · ${D.bytes(res.input_bytes)} → ${D.bytes(res.output_bytes)} (ratio ${D.num(res.ratio)})`);
    } catch (e) { D.status(e.message, true); }
  };
  D.$("#file").addEventListener("change", e => load(e.target.value));
  D.$("#load").addEventListener("click", () => load(D.$("#path").value.trim() || D.$("#file").value));
  const initial = q.get("path") || (files.files[0] && files.files[0].path);
  if (initial) { if ([...D.$("#file").options].some(o => o.value === initial)) D.$("#file").value = initial; else D.$("#path").value = initial; load(initial); }
  else D.status(files.files.length ? "" : "no .dhp file under the allowed directories: pack one with `dhurandhar pack`, or give a path");
})();
