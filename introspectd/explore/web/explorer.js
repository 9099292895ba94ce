// introspectd explorer: one page for the server (fetches /api/*) and for explorer.html (data
// embedded, same queries done here). Every piece of data enters the DOM as text (textContent,
// createTextNode), never as HTML. Differences are shown in percentage points and coloured by
// the report's own scale (report/scale.py, embedded as #colour-scale).
"use strict";
(function () {
  const PAGE = 20;
  const FILTERS = ["arm", "answer", "coherent", "refused", "failed", "q"];
  // Serving the network, the explorer answers only requests carrying the token of its URL.
  const TOKEN = new URLSearchParams(location.search).get("token");

  // ------------------------------------------------------------------ backends
  class ServerBackend {
    async get(path, params) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") qs.set(k, v);
      const headers = TOKEN ? { "X-Introspectd-Token": TOKEN } : {};
      const r = await fetch(path + "?" + qs.toString(), { cache: "no-store", headers });
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      return r.json();
    }
    meta(model) { return this.get("/api/meta", { model }); }
    cells(model, concept) { return this.get("/api/cells", { model, concept }); }
    trials(model, params) { return this.get("/api/trials", { model, ...params }); }
    trial(model, id) { return this.get("/api/trial", { model, id }); }
  }

  const { LocalBackend, searchOf, answerOf, isNum } = ExplorerData;

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const SCALE = JSON.parse($("colour-scale").textContent);
  // A difference of proportions (−1..1) in percentage points, a proportion in percent.
  function points(x) { return isNum(x) && !Number.isNaN(x) ? 100 * x : null; }
  function fmtPoints(x) { const v = points(x); return v === null ? "–" : (v >= 0 ? "+" : "") + v.toFixed(1); }
  function fmtPct(x) { const v = points(x); return v === null ? "–" : v.toFixed(1) + "%"; }
  function rgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }
  // As report/scale.py colour_at: linear between evenly spaced stops, clipped at ±limit points.
  function colour(value) {
    if (value === null) return rgb(SCALE.missing);
    const n = SCALE.stops.length, L = SCALE.limit;
    const x = (Math.max(-L, Math.min(L, value)) + L) / (2 * L) * (n - 1);
    const i = Math.min(Math.floor(x), n - 2), f = x - i;
    const lo = rgb(SCALE.stops[i]), hi = rgb(SCALE.stops[i + 1]);
    return lo.map((a, k) => Math.round(a + (hi[k] - a) * f));
  }
  function ink([r, g, b]) {
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 > SCALE.ink_luminance ? "black" : "white";
  }
  // `words`: [text, mark class] pairs, earlier pairs winning where both match.
  function highlighted(tag, text, words, attrs) {
    const pairs = words.filter(([w]) => w);
    const out = el(tag, attrs || {});
    if (!pairs.length) { out.append(text); return out; }
    const re = new RegExp("(" + pairs.map(([w]) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")", "gi");
    let last = 0;
    for (const m of text.matchAll(re)) {
      const [, cls] = pairs.find(([w]) => w.toLowerCase() === m[0].toLowerCase()) || ["", ""];
      out.append(text.slice(last, m.index), el("mark", cls ? { class: cls } : {}, m[0]));
      last = m.index + m[0].length;
    }
    out.append(text.slice(last));
    return out;
  }

  // A code-point offset (Python's, as records give them) as an index into a JS (UTF-16) string.
  function utf16Index(text, codePoints) {
    let i = 0;
    for (let n = 0; n < codePoints && i < text.length; n++) i += text.codePointAt(i) > 0xffff ? 2 : 1;
    return i;
  }
  // The answer with its first mention of the concept (the record's `mention`) marked apart,
  // and `words` highlighted around it as everywhere else.
  function answerPre(text, mention, words) {
    const m = mention && isNum(mention.first_char) && typeof mention.text === "string" ? mention : null;
    const start = m ? utf16Index(text, m.first_char) : -1, end = m ? start + m.text.length : -1;
    if (!m || text.slice(start, end) !== m.text) return highlighted("pre", text, words);
    const pre = el("pre", {});
    pre.append(highlighted("span", text.slice(0, start), words),
      el("mark", { class: "mention", title: "first mention of the concept" }, m.text),
      highlighted("span", text.slice(end), words));
    return pre;
  }
  function mentionFact(m) {
    return m && isNum(m.first_char) ? `“${m.text}” at character ${m.first_char}` : "none";
  }

  // ------------------------------------------------------------------ state and URL
  const state = { model: "", concept: "", layer: "", strength: "", page: 0, trial: "", filters: {} };
  let meta = null, listed = [], current = -1;
  const embedded = JSON.parse($("embedded-data").textContent);
  const backend = embedded ? new LocalBackend(embedded) : new ServerBackend();

  function toHash() {
    const p = new URLSearchParams();
    for (const k of ["model", "concept", "layer", "strength", "trial"]) if (state[k] !== "") p.set(k, state[k]);
    if (state.page) p.set("page", state.page);
    for (const k of FILTERS) if (state.filters[k]) p.set(k, state.filters[k]);
    return "#" + p.toString();
  }
  function fromHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    for (const k of ["model", "concept", "layer", "strength", "trial"]) state[k] = p.get(k) || "";
    state.page = Number(p.get("page") || 0);
    state.filters = {};
    for (const k of FILTERS) if (p.get(k)) state.filters[k] = p.get(k);
  }
  function navigate(replace) {
    const url = toHash();
    if (url !== location.hash) (replace ? history.replaceState : history.pushState).call(history, null, "", url);
  }

  // ------------------------------------------------------------------ rendering
  async function loadMeta() {
    meta = await backend.meta(state.model);
    const rank = (a) => (a === "injection" ? 0 : a === "control" ? 1 : 2);
    meta.arms.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    state.model = meta.model;
    if (!meta.concepts.includes(state.concept)) state.concept = meta.concepts[0] || "";
    fillSelect($("model"), meta.models, state.model);
    fillSelect($("concept"), meta.concepts, state.concept);
    const arm = document.querySelector("#filters [name=arm]");
    fillSelect(arm, ["", ...meta.arms], state.filters.arm || "", "any");
  }
  function fillSelect(select, values, chosen, emptyLabel) {
    select.replaceChildren(...values.map((v) => el("option", { value: v }, v === "" ? emptyLabel : v)));
    select.value = chosen;
  }
  function showCounts(counts) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const parts = Object.entries(counts).sort().map(([k, v]) => `${k} ${v}`);
    $("counts").textContent = `${total} trials: ${parts.join(", ")}`;
  }

  async function renderHeatmap() {
    const data = await backend.cells(state.model, state.concept);
    showCounts(data.counts);
    const layers = [...new Set(data.cells.map((c) => c.layer))].sort((a, b) => a - b);
    const strengths = [...new Set(data.cells.map((c) => c.strength))].sort((a, b) => a - b);
    const at = new Map();
    for (const c of data.cells) {
      const key = c.layer + "|" + c.strength;
      if (!at.has(key)) at.set(key, {});
      at.get(key)[c.arm] = c;
    }
    // A logit-measure run has read-outs (p_yes) and nothing judged: its cells show the yes-shift.
    const measure = MEASURES[data.cells.some((c) => c.n_p_yes) && !data.cells.some((c) => c.n_judged) ? "logit" : "judged"];
    const head = el("tr", {}, el("th", {}, "layer \\ strength"), ...strengths.map((s) => el("th", {}, String(s))));
    const rows = layers.map((layer) => el("tr", {}, el("th", {}, String(layer)), ...strengths.map((s) => cellTd(layer, s, at.get(layer + "|" + s) || {}, measure))));
    $("heatmap-title").textContent = measure.title;
    $("heatmap").replaceChildren(el("table", { class: "heat", "data-measure": measure.name }, head, ...rows));
    drawLegend(measure);
    // First heatmap drawn, in ms since navigation began: what bench/explore_paint.py reads.
    if (!document.body.dataset.heatmapMs) document.body.dataset.heatmapMs = Math.round(performance.now());
    document.body.dataset.heatmap = "ready";
  }
  // What a cell shows: its difference (a fraction; shown in points), counts and tooltip.
  const MEASURES = {
    judged: {
      name: "judged", title: "Net detection (injection pass − control false positives)",
      legend: "net detection = injection pass % − control false-positive %",
      cell(inj, ctl, arms) {
        const pass = inj && inj.n_judged ? inj.n_pass / inj.n_judged : null;
        const fp = ctl && ctl.n_judged ? 1 - ctl.n_pass / ctl.n_judged : null;
        const n = Object.values(arms).map((a) => `${a.n_judged}/${a.n_planned}`).join(" · ");
        return { value: pass !== null && fp !== null ? pass - fp : null, n,
          about: `injection pass ${fmtPct(pass)}, control FP ${fmtPct(fp)}; judged/planned per arm ${n}` };
      },
    },
    logit: {
      name: "logit", title: "Yes-shift (mean p_yes: injection − control), logit measure",
      legend: "yes-shift = mean p_yes(injection) − mean p_yes(control), detection question",
      cell(inj, ctl) {
        const mean = (a) => (a && a.n_p_yes ? a.sum_p_yes / a.n_p_yes : null);
        const pi = mean(inj), pc = mean(ctl), n = `${inj ? inj.n_p_yes : 0}/${ctl ? ctl.n_p_yes : 0}`;
        return { value: pi !== null && pc !== null ? pi - pc : null, n,
          about: `mean p_yes injection ${fmtPct(pi)}, control ${fmtPct(pc)}; injection/control read-outs ${n}` };
      },
    },
  };
  function cellTd(layer, strength, arms, measure) {
    const shown = measure.cell(arms.injection, arms.control, arms);
    const selected = String(layer) === state.layer && String(strength) === state.strength;
    const td = el("td", {
      class: "cell" + (selected ? " selected" : ""), "data-layer": layer, "data-strength": strength,
      "data-points": points(shown.value) ?? "",
      title: `layer ${layer}, strength ${strength}: ${fmtPoints(shown.value)} ${SCALE.unit}; ${shown.about}`,
      onclick: () => { Object.assign(state, { layer: String(layer), strength: String(strength), page: 0, trial: "" }); navigate(); render(); },
    }, fmtPoints(shown.value), el("small", {}, shown.n));
    const bg = colour(points(shown.value));
    td.style.background = `rgb(${bg.join(",")})`;
    td.style.color = ink(bg);
    return td;
  }
  function drawLegend(measure) {
    const L = SCALE.limit, ticks = [-L, -L / 2, 0, L / 2, L];
    const bar = el("div", { class: "bar" });
    bar.style.background = `linear-gradient(to right, ${SCALE.stops.join(", ")})`;
    const missing = el("span", { class: "swatch" });
    missing.style.background = SCALE.missing;
    $("legend").replaceChildren(bar,
      el("div", { class: "ticks" }, ...ticks.map((t) => el("span", {}, (t > 0 ? "+" : "") + t))),
      el("p", { class: "muted" }, `${SCALE.unit}: ${measure.legend}. Blue: higher under injection, red: lower, white: no difference; `,
        missing, " no data."));
  }

  function hasList() { return state.layer !== "" || FILTERS.some((k) => state.filters[k]); }
  async function renderList() {
    const title = $("cell-title"), columns = $("columns");
    listed = [];
    if (!hasList()) { columns.replaceChildren(); $("pager").replaceChildren(); return; }
    title.textContent = state.layer !== "" ? `${state.concept}: layer ${state.layer}, strength ${state.strength}` : `${state.concept}: all cells`;
    const arms = state.filters.arm ? [state.filters.arm] : meta.arms;
    const base = { concept: state.concept, layer: state.layer, strength: state.strength, ...state.filters, offset: state.page * PAGE, limit: PAGE };
    const pages = await Promise.all(arms.map((arm) => backend.trials(state.model, { ...base, arm })));
    const cols = pages.map((page, i) => el("div", { class: "column", "data-arm": arms[i] },
      el("h3", {}, `${arms[i]} (${page.total})`), ...page.items.map((t) => itemDiv(t))));
    // Reading order for j/k: row by row across the arms.
    for (let r = 0; r < PAGE; r++) pages.forEach((p) => { if (p.items[r]) listed.push(p.items[r].id); });
    columns.replaceChildren(...cols);
    const most = Math.max(...pages.map((p) => p.total));
    const last = Math.max(0, Math.ceil(most / PAGE) - 1);
    const go = (page) => () => { state.page = page; navigate(); render(); };
    $("pager").replaceChildren(
      el("button", { type: "button", onclick: go(Math.max(0, state.page - 1)) }, "‹ prev"),
      el("span", { id: "page-label" }, `page ${state.page + 1} of ${last + 1}`),
      el("button", { type: "button", onclick: go(Math.min(last, state.page + 1)) }, "next ›"));
    current = listed.indexOf(state.trial);
    markCurrent();
  }
  function itemDiv(t) {
    const a = answerOf(t), needle = searchOf(state.filters.q).text;
    const tag = isNum(t.p_yes) ? `p_yes ${fmtPct(t.p_yes)}` : a || t.status;
    const what = isNum(t.question) ? `t${t.trial} factual ${t.question} ` : `t${t.trial} `;
    const text = needle ? t.excerpt : (t.excerpt || "").slice(0, 160);
    return el("div", { class: "item", "data-id": t.id, onclick: () => openTrial(t.id, false) },
      el("span", { class: "tag " + (a || "") }, tag), what,
      ...(t.excerpt_of === "reasoning" ? [el("span", { class: "muted" }, "judge: ")] : []),
      highlighted("span", text, [[needle, "hit"]]));
  }
  function markCurrent() {
    for (const node of document.querySelectorAll(".item")) node.classList.toggle("current", node.dataset.id === state.trial);
  }

  async function renderTrial() {
    const pane = $("trial-pane");
    if (!state.trial) { pane.replaceChildren(el("p", { class: "muted" }, "No transcript open.")); return; }
    let t;
    try { t = await backend.trial(state.model, state.trial); } catch (e) { pane.replaceChildren(el("p", {}, "Trial not found: " + state.trial)); return; }
    const j = t.judge || {}, logit = isNum(t.p_yes);
    const hit = [searchOf(state.filters.q).text, "hit"];
    const words = [hit, [t.concept, ""], [typeof j.detected_concept === "string" ? j.detected_concept : "", ""]];
    const facts = [["trial id", t.id], ["arm", t.arm], ["concept", t.concept], ["layer", t.layer], ["strength", t.strength],
      ["trial", t.trial], ["seed", t.seed ?? "–"], ["prompt version", t.config.prompt_version || "–"], ["status", t.status],
      ...(logit ? [] : [["first mention", mentionFact(t.mention)]]),
      ...(logit ? [["p_yes", fmtPct(t.p_yes)], ["P(yes), P(no)", [t.prob_yes, t.prob_no].map((x) => (isNum(x) ? x.toPrecision(3) : "–")).join(", ")],
        ["question", isNum(t.question) ? `factual ${t.question}: ${t.question_text || ""}` : "the detection question"]] : [])];
    const judged = Object.entries(j).filter(([k]) => k !== "reasoning").map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]);
    const answer = logit && !t.response ? el("p", { class: "muted" }, "logit measure: one forward pass read as P(yes); no text") : answerPre(t.response || "", t.mention, words);
    const unjudged = t.judge_error ? "judge failed: " + t.judge_error : logit ? "nothing to judge (logit measure)" : "not judged";
    pane.replaceChildren(
      el("h2", {}, `${t.arm} · layer ${t.layer} · strength ${t.strength} · t${t.trial}`),
      dl(facts), el("h3", {}, "Answer"), answer,
      el("h3", {}, "Judge"), t.judge ? dl(judged) : el("p", { class: "muted" }, unjudged),
      ...(j.reasoning ? [highlighted("p", String(j.reasoning), [hit], { class: "reasoning" })] : []),
      el("h3", {}, "Config"), el("pre", {}, JSON.stringify(t.config, null, 2)));
  }
  function dl(pairs) { return el("dl", {}, ...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])); }

  async function render() {
    $("concept").value = state.concept;
    for (const k of FILTERS) document.querySelector(`#filters [name=${k}]`).value = state.filters[k] || "";
    await renderHeatmap();
    await Promise.all([renderList(), renderTrial()]);
    document.body.dataset.rendered = toHash();
  }
  function openTrial(id, replace) {
    state.trial = id;
    navigate(replace);
    markCurrent();
    renderTrial();
  }

  // ------------------------------------------------------------------ events
  $("model").addEventListener("change", async (e) => {
    Object.assign(state, { model: e.target.value, concept: "", layer: "", strength: "", page: 0, trial: "" });
    await loadMeta(); navigate(); render();
  });
  $("concept").addEventListener("change", (e) => {
    Object.assign(state, { concept: e.target.value, layer: "", strength: "", page: 0, trial: "" });
    navigate(); render();
  });
  let typing = null;
  function onFilter(e) {
    const name = e.target.name, value = e.target.value;
    if ((state.filters[name] || "") === value) return;
    const apply = () => { state.filters[name] = value; state.page = 0; navigate(); render(); };
    clearTimeout(typing);
    if (name === "q") typing = setTimeout(apply, 250); else apply();
  }
  $("filters").addEventListener("input", onFilter);
  $("filters").addEventListener("change", onFilter);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  window.addEventListener("popstate", async () => { fromHash(); await loadMeta(); navigate(true); render(); });
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, select, textarea") || !listed.length) return;
    const step = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    current = Math.max(0, Math.min(listed.length - 1, current + step));
    openTrial(listed[current], true);
  });

  (async () => {
    fromHash();
    await loadMeta();
    navigate(true);
    await render();
    if (!embedded) setInterval(() => { renderHeatmap().catch(() => {}); }, 3000);
  })().catch((e) => { document.body.dataset.error = String(e); $("counts").textContent = "error: " + e.message; });
})();
