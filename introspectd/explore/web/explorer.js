// introspectd explorer: one page for the server (fetches /api/*) and for explorer.html (data
// embedded, same queries done here). Every piece of data enters the DOM as text (textContent,
// createTextNode), never as HTML.
"use strict";
(function () {
  const PAGE = 20;
  const FILTERS = ["arm", "answer", "coherent", "refused", "failed", "q"];

  // ------------------------------------------------------------------ backends
  class ServerBackend {
    async get(path, params) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") qs.set(k, v);
      const r = await fetch(path + "?" + qs.toString(), { cache: "no-store" });
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      return r.json();
    }
    meta(model) { return this.get("/api/meta", { model }); }
    cells(model, concept) { return this.get("/api/cells", { model, concept }); }
    trials(model, params) { return this.get("/api/trials", { model, ...params }); }
    trial(model, id) { return this.get("/api/trial", { model, id }); }
  }

  class LocalBackend {
    constructor(data) {
      this.sources = new Map(data.sources.map((s) => [s.model, s]));
      this.first = data.sources[0].model;
    }
    src(model) { return this.sources.get(model) || this.sources.get(this.first); }
    counts(s) {
      const c = {};
      for (const t of s.rows) c[t.status] = (c[t.status] || 0) + 1;
      return c;
    }
    async meta(model) {
      const s = this.src(model);
      const concepts = [], arms = new Set();
      for (const t of s.rows) { if (!concepts.includes(t.concept)) concepts.push(t.concept); arms.add(t.arm); }
      return { models: [...this.sources.keys()], model: s.model, concepts, arms: [...arms].sort(), counts: this.counts(s) };
    }
    async cells(model, concept) {
      const s = this.src(model), by = new Map();
      for (const t of s.rows) {
        if (t.concept !== concept) continue;
        const key = t.layer + "|" + t.strength + "|" + t.arm;
        let c = by.get(key);
        if (!c) by.set(key, c = { layer: t.layer, strength: t.strength, arm: t.arm, n_planned: 0, n_generated: 0, n_judged: 0, n_pass: 0, n_failed: 0 });
        c.n_planned++;
        if (t.status !== "pending") c.n_generated++;
        const a = answerOf(t);
        if (a !== null) c.n_judged++;
        if (a === "pass") c.n_pass++;
        if (t.status === "judge_failed") c.n_failed++;
      }
      return { concept, cells: [...by.values()], counts: this.counts(s) };
    }
    async trials(model, p) {
      const q = (p.q || "").toLowerCase();
      const hit = this.src(model).rows.filter((t) =>
        t.status !== "pending" &&
        (!p.concept || t.concept === p.concept) &&
        (p.layer === undefined || p.layer === null || p.layer === "" || t.layer === Number(p.layer)) &&
        (p.strength === undefined || p.strength === null || p.strength === "" || t.strength === Number(p.strength)) &&
        (!p.arm || t.arm === p.arm) &&
        (!p.answer || (p.answer === "none" ? answerOf(t) === null : answerOf(t) === p.answer)) &&
        flagOk(t, "coherent", p.coherent) && flagOk(t, "refused", p.refused) &&
        (!p.failed || (t.status === "judge_failed") === (p.failed === "true")) &&
        (!q || (t.response || "").toLowerCase().includes(q) || t.id.toLowerCase().includes(q)));
      const offset = Number(p.offset || 0), limit = Number(p.limit || 50);
      return { total: hit.length, offset, items: hit.slice(offset, offset + limit) };
    }
    async trial(model, id) {
      const s = this.src(model), t = s.rows.find((r) => r.id === id);
      if (!t) throw new Error("no trial " + id);
      return { ...t, model: s.model, seed: null, config: { model: s.model, ...s.config, layer: t.layer, strength: t.strength, trial: t.trial } };
    }
  }

  function answerOf(t) {
    const a = t.judge && t.judge.answer;
    return typeof a === "string" ? a.toLowerCase() : null;
  }
  function flagOk(t, name, want) {
    if (!want) return true;
    return t.judge !== null && t.judge[name] === (want === "true");
  }

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
  function fmt(x) { return x === null || x === undefined || Number.isNaN(x) ? "–" : (x >= 0 ? "+" : "") + x.toFixed(2); }
  function color(net) {
    if (net === null) return "#eeeeee";
    const v = Math.max(-1, Math.min(1, net)), a = Math.abs(v);
    const mix = (c) => Math.round(255 - (255 - c) * a);
    return v >= 0 ? `rgb(${mix(198)},${mix(40)},${mix(40)})` : `rgb(${mix(30)},${mix(90)},${mix(200)})`;
  }
  function highlighted(text, words) {
    const pieces = words.filter(Boolean).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const out = el("pre", {});
    if (!pieces.length) { out.append(text); return out; }
    const re = new RegExp("(" + pieces.join("|") + ")", "gi");
    let last = 0;
    for (const m of text.matchAll(re)) {
      out.append(text.slice(last, m.index), el("mark", {}, m[0]));
      last = m.index + m[0].length;
    }
    out.append(text.slice(last));
    return out;
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
    const head = el("tr", {}, el("th", {}, "layer \\ strength"), ...strengths.map((s) => el("th", {}, String(s))));
    const rows = layers.map((layer) => el("tr", {}, el("th", {}, String(layer)), ...strengths.map((s) => cellTd(layer, s, at.get(layer + "|" + s) || {}))));
    $("heatmap").replaceChildren(el("table", { class: "heat" }, head, ...rows));
    // First heatmap drawn, in ms since navigation began: what bench/explore_paint.py reads.
    if (!document.body.dataset.heatmapMs) document.body.dataset.heatmapMs = Math.round(performance.now());
    document.body.dataset.heatmap = "ready";
  }
  function cellTd(layer, strength, arms) {
    const inj = arms.injection, ctl = arms.control;
    const pass = inj && inj.n_judged ? inj.n_pass / inj.n_judged : null;
    const fp = ctl && ctl.n_judged ? 1 - ctl.n_pass / ctl.n_judged : null;
    const net = pass !== null && fp !== null ? pass - fp : null;
    const n = Object.values(arms).map((a) => `${a.n_judged}/${a.n_planned}`).join(" · ");
    const selected = String(layer) === state.layer && String(strength) === state.strength;
    const td = el("td", {
      class: "cell" + (selected ? " selected" : ""), "data-layer": layer, "data-strength": strength,
      title: `layer ${layer}, strength ${strength}: injection pass ${fmt(pass)}, control FP ${fmt(fp)}; judged/planned per arm ${n}`,
      onclick: () => { Object.assign(state, { layer: String(layer), strength: String(strength), page: 0, trial: "" }); navigate(); render(); },
    }, fmt(net), el("small", {}, n));
    td.style.background = color(net);
    return td;
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
    const a = answerOf(t);
    return el("div", { class: "item", "data-id": t.id, onclick: () => openTrial(t.id, false) },
      el("span", { class: "tag " + (a || "") }, a || t.status), `t${t.trial} `, (t.response || "").slice(0, 160));
  }
  function markCurrent() {
    for (const node of document.querySelectorAll(".item")) node.classList.toggle("current", node.dataset.id === state.trial);
  }

  async function renderTrial() {
    const pane = $("trial-pane");
    if (!state.trial) { pane.replaceChildren(el("p", { class: "muted" }, "No transcript open.")); return; }
    let t;
    try { t = await backend.trial(state.model, state.trial); } catch (e) { pane.replaceChildren(el("p", {}, "Trial not found: " + state.trial)); return; }
    const j = t.judge || {};
    const words = [t.concept, typeof j.detected_concept === "string" ? j.detected_concept : ""];
    const facts = [["trial id", t.id], ["arm", t.arm], ["concept", t.concept], ["layer", t.layer], ["strength", t.strength],
      ["trial", t.trial], ["seed", t.seed === null ? "–" : t.seed], ["prompt version", t.config.prompt_version || "–"], ["status", t.status]];
    const judged = Object.entries(j).filter(([k]) => k !== "reasoning").map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]);
    pane.replaceChildren(
      el("h2", {}, `${t.arm} · layer ${t.layer} · strength ${t.strength} · t${t.trial}`),
      dl(facts), el("h3", {}, "Answer"), highlighted(t.response || "", words),
      el("h3", {}, "Judge"), t.judge ? dl(judged) : el("p", { class: "muted" }, t.judge_error ? "judge failed: " + t.judge_error : "not judged"),
      ...(j.reasoning ? [el("p", { class: "reasoning" }, String(j.reasoning))] : []),
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
