"use strict";
// Chat keeps the transcript here and sends it whole each turn as `messages`; the server
// renders it with the GGUF's own chat template (or plain "User: …" / "Assistant: …"
// lines when the file has none, reported as chat_format "plain").
(async () => {
  const files = await D.api("/api/files?ext=gguf");
  files.files.forEach(f => D.option(D.$("#file"), f.path, `${f.path.split("/").slice(-2).join("/")} (${D.bytes(f.bytes)})`));
  if (files.files.length) D.$("#file").value = files.files[0].path;
  let es = null;
  let turns = [];       // [{role: "user" | "assistant", text}]
  let reply = null;     // the assistant turn being streamed: {el, text}
  let plain = false;    // this turn's prompt is plain lines: cut the reply at "User:"
  const NAMES = { user: "User", assistant: "Assistant" };
  const addTurn = (role, text) => {
    const d = document.createElement("div"); d.className = "turn turn-" + role;
    const b = document.createElement("b"); b.textContent = NAMES[role];
    const t = document.createElement("span"); t.textContent = text;
    d.append(b, t); D.$("#transcript").appendChild(d);
    return t;
  };
  // Plain prompts: a reply ends where the model starts writing the user's next line.
  const cut = s => plain ? s.split(/\n\s*User:/)[0].trim() : s.trim();
  const endReply = () => {
    if (reply && D.$("#chat").checked) turns.push({ role: "assistant", text: cut(reply.text) });
    if (reply) reply.el.textContent = cut(reply.text);
    reply = null;
  };
  const stop = () => { if (es) { es.close(); es = null; } endReply(); D.$("#go").disabled = false; D.$("#stop").disabled = true; };
  D.$("#clear").addEventListener("click", () => { stop(); turns = []; D.$("#transcript").replaceChildren(); D.$("#out").textContent = ""; D.status("new conversation"); });
  D.$("#go").addEventListener("click", async () => {
    const path = D.$("#path").value.trim() || D.$("#file").value;
    if (!path) { D.status("choose a GGUF model", true); return; }
    // The header first: a refused or unreadable path is reported with its reason.
    try { await D.api("/api/inspect?" + new URLSearchParams({ path })); } catch (err) { D.status(err.message, true); return; }
    const msg = D.$("#prompt").value;
    const chat = D.$("#chat").checked;
    if (!chat) { turns = []; D.$("#transcript").replaceChildren(); }
    const p = new URLSearchParams({ path, max_tokens: D.$("#max").value, temperature: D.$("#temp").value, weights: D.$("#weights").value });
    if (chat) p.set("messages", JSON.stringify(turns.map(t => ({ role: t.role, content: t.text })).concat([{ role: "user", content: msg }])));
    else p.set("prompt", msg);
    plain = false;
    if (D.$("#weights").value === "stream" && D.$("#budget").value.trim()) p.set("ram_budget", D.$("#budget").value.trim());
    addTurn("user", msg);
    if (chat) turns.push({ role: "user", text: msg });
    reply = { el: addTurn("assistant", ""), text: "" };
    D.$("#out").textContent = ""; D.$("#n").textContent = "0"; D.$("#tps").textContent = "–";
    const speed = [];
    D.$("#go").disabled = true; D.$("#stop").disabled = false;
    D.status("loading the model…");
    es = new EventSource("/api/run?" + p.toString());
    es.addEventListener("start", e => {
      const s = JSON.parse(e.data);
      D.$("#load").textContent = s.load_seconds.toFixed(2) + " s";
      D.$("#store").textContent = s.weight_store + (s.ram_budget_bytes ? ` (budget ${D.bytes(s.ram_budget_bytes)})` : "");
      plain = s.chat_format === "plain";
      D.$("#format").textContent = s.chat_format === "template" ? "the model's chat template" : s.chat_format === "plain" ? "plain User:/Assistant: lines (no template in the file)" : "raw completion";
      D.status(`prompt ${s.prompt_tokens} tokens (turn ${Math.ceil(turns.length / 2) || 1}): generating…`);
    });
    es.addEventListener("token", e => {
      const t = JSON.parse(e.data);
      D.$("#out").textContent += t.text;
      if (reply) { reply.text += t.text; reply.el.textContent = reply.text; }
      D.$("#n").textContent = t.n;
      if (t.tokens_per_s > 0) { D.$("#tps").textContent = t.tokens_per_s.toFixed(1); speed.push({ token: t.n, seconds: t.seconds, tokens_per_s: t.tokens_per_s }); }
    });
    es.addEventListener("done", e => {
      const r = JSON.parse(e.data);
      stop();
      D.$("#tps").textContent = r.decode_tokens_per_s.toFixed(1);
      D.$("#rss").textContent = D.bytes(r.peak_rss_bytes);
      D.$("#hit").textContent = r.weight_cache_hit == null ? "–" : `${(100 * r.weight_cache_hit).toFixed(1)}%`;
      const w = r.weights;
      if (w.mode === "stream") D.$("#store").textContent = `stream${w.ram_budget_bytes ? ` (budget ${D.bytes(w.ram_budget_bytes)})` : ""}: ${D.bytes(w.bytes_read_per_token)} read per token` + (w.traffic ? `, ${Math.round(100 * w.traffic.io_wait_share)}% waiting for reads` : "");
      D.lines(D.$("#chart"), [{ name: "tokens/s", points: speed.map(s => [s.token, s.tokens_per_s]) }], { xLabel: "token", yLabel: "tokens/s (running mean)", label: "decode tokens per second" });
      const t = D.table(D.$("#speed"), speed);
      D.downloads(D.$("#chart-dl"), "generation", r, t.rows, t.cols);
      const rep = Object.assign({}, r); delete rep.text; delete rep.predicted; delete rep.weight_cache_hit;
      D.table(D.$("#report"), [rep]);
      predicted(r);
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
  // The planner's prediction for this run on the probed host, beside the measurement.
  const predicted = r => {
    const p = r.predicted;
    if (!p) {
      D.$("#predicted-note").textContent = r.prediction_note ? `no prediction: ${r.prediction_note}` : "";
      D.$("#predicted").replaceChildren();
      return;
    }
    const t = p.threads[0] || {};
    const pct = v => v == null ? "–" : `${v > 0 ? "+" : ""}${v.toFixed(1)}%`;
    const num = v => v == null ? "–" : v.toFixed(1);
    const rows = [
      { quantity: "decode tokens/s", predicted: num(t.decode_tps), measured: num(t.measured_decode_tps), error: pct(t.decode_error_pct), note: t.decode_bound ? `bound: ${t.decode_bound}` : "" },
      { quantity: "prefill tokens/s", predicted: num(t.prefill_tps), measured: num(t.measured_prefill_tps), error: pct(t.prefill_error_pct), note: "" },
    ];
    if (p.weight_mode === "stream") {
      rows.push({ quantity: "flash bytes per token", predicted: D.bytes(p.flash_bytes_per_token), measured: p.measured_flash_bytes_per_token == null ? "–" : D.bytes(p.measured_flash_bytes_per_token), error: "", note: "" });
    }
    rows.push({ quantity: "peak RSS of the run", predicted: D.bytes(p.peak_rss_bytes), measured: "–", error: "", note: "the server process holds more than one run" });
    D.$("#predicted-note").textContent = `host probed ${p.measured_at || "(date unknown)"}, ${t.threads} thread(s), context ${p.context_tokens} tokens, weights ${p.weight_mode}`;
    D.table(D.$("#predicted"), rows);
  };
  D.$("#stop").addEventListener("click", () => { stop(); D.status("stopped"); });
  D.$("#weights").addEventListener("change", () => { D.$("#budget").disabled = D.$("#weights").value !== "stream"; });
})();
