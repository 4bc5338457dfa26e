"use strict";
(async () => {
  const files = await D.api("/api/files?ext=gguf");
  files.files.forEach(f => D.option(D.$("#file"), f.path, `${f.path.split("/").slice(-2).join("/")} (${D.bytes(f.bytes)})`));
  if (files.files.length) D.$("#file").value = files.files[0].path;
  let es = null;
  const stop = () => { if (es) { es.close(); es = null; } D.$("#go").disabled = false; D.$("#stop").disabled = true; };
  D.$("#go").addEventListener("click", async () => {
    const path = D.$("#path").value.trim() || D.$("#file").value;
    if (!path) { D.status("choose a GGUF model", true); return; }
    // The header first: a refused or unreadable path is reported with its reason.
    try { await D.api("/api/inspect?" + new URLSearchParams({ path })); } catch (err) { D.status(err.message, true); return; }
    const p = new URLSearchParams({ path, prompt: D.$("#prompt").value, max_tokens: D.$("#max").value, temperature: D.$("#temp").value, chat: D.$("#chat").checked });
    D.$("#out").textContent = ""; D.$("#n").textContent = "0"; D.$("#tps").textContent = "–";
    const speed = [];
    D.$("#go").disabled = true; D.$("#stop").disabled = false;
    D.status("loading the model…");
    es = new EventSource("/api/run?" + p.toString());
    es.addEventListener("start", e => { const s = JSON.parse(e.data); D.$("#load").textContent = s.load_seconds.toFixed(2) + " s"; D.status(`prompt ${s.prompt_tokens} tokens: generating…`); });
    es.addEventListener("token", e => {
      const t = JSON.parse(e.data);
      D.$("#out").textContent += t.text;
      D.$("#n").textContent = t.n;
      if (t.tokens_per_s > 0) { D.$("#tps").textContent = t.tokens_per_s.toFixed(1); speed.push({ token: t.n, seconds: t.seconds, tokens_per_s: t.tokens_per_s }); }
    });
    es.addEventListener("done", e => {
      const r = JSON.parse(e.data);
      stop();
      D.$("#tps").textContent = r.decode_tokens_per_s.toFixed(1);
      D.$("#rss").textContent = D.bytes(r.peak_rss_bytes);
      D.lines(D.$("#chart"), [{ name: "tokens/s", points: speed.map(s => [s.token, s.tokens_per_s]) }], { xLabel: "token", yLabel: "tokens/s (running mean)", label: "decode tokens per second" });
      const t = D.table(D.$("#speed"), speed);
      D.downloads(D.$("#chart-dl"), "generation", r, t.rows, t.cols);
      const rep = Object.assign({}, r); delete rep.text;
      D.table(D.$("#report"), [rep]);
      D.status(`done: ${r.generated_tokens} tokens, stop: ${r.stop_reason}`);
    });
    es.addEventListener("error", e => {
      if (e.data) { D.status(JSON.parse(e.data).error, true); stop(); return; }
      if (es && es.readyState !== EventSource.OPEN) {
        D.status("the generation stream was refused or broke (is another generation running?)", true);
        stop();
      }
    });
  });
  D.$("#stop").addEventListener("click", () => { stop(); D.status("stopped"); });
})();
