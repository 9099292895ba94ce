// explorer.html's data layer: the server's queries (run/db/browse.py, explore/server.py) done on
// the records embedded in the page. Loaded before explorer.js, in the same <script>.
"use strict";
const ExplorerData = (function () {
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
        if (!c) by.set(key, c = { layer: t.layer, strength: t.strength, arm: t.arm, n_planned: 0, n_generated: 0, n_judged: 0, n_pass: 0, n_failed: 0, n_p_yes: 0, sum_p_yes: 0 });
        c.n_planned++;
        if (isNum(t.p_yes) && !isNum(t.question)) { c.n_p_yes++; c.sum_p_yes += t.p_yes; }
        if (t.status !== "pending") c.n_generated++;
        const a = answerOf(t);
        if (a !== null) c.n_judged++;
        if (a === "pass") c.n_pass++;
        if (t.status === "judge_failed") c.n_failed++;
      }
      return { concept, cells: [...by.values()], counts: this.counts(s) };
    }
    async trials(model, p) {
      const q = searchOf(p.q);
      const hit = this.src(model).rows.filter((t) =>
        t.status !== "pending" &&
        (!p.concept || t.concept === p.concept) &&
        (p.layer === undefined || p.layer === null || p.layer === "" || t.layer === Number(p.layer)) &&
        (p.strength === undefined || p.strength === null || p.strength === "" || t.strength === Number(p.strength)) &&
        (!p.arm || t.arm === p.arm) &&
        (!p.answer || (p.answer === "none" ? answerOf(t) === null : answerOf(t) === p.answer)) &&
        flagOk(t, "coherent", p.coherent) && flagOk(t, "refused", p.refused) &&
        (!p.failed || (t.status === "judge_failed") === (p.failed === "true")) &&
        (!q.text || [t.response, reasoningOf(t)].some((x) => x.toLowerCase().includes(q.text))) &&
        (!q.id || t.id.toLowerCase().includes(q.id)));
      const offset = Number(p.offset || 0), limit = Number(p.limit || 50);
      return { total: hit.length, offset, items: hit.slice(offset, offset + limit).map((t) => listItem(t, q.text)) };
    }
    async trial(model, id) {
      const s = this.src(model), t = s.rows.find((r) => r.id === id);
      if (!t) throw new Error("no trial " + id);
      return { ...t, model: s.model, seed: t.seed ?? null, config: { model: s.model, ...s.config, layer: t.layer, strength: t.strength, trial: t.trial } };
    }
  }

  // The search box, as run/db/browse.py `search_filter` reads it: `id:TEXT` searches ids, anything
  // else the answers and the judge's reasoning (ids name the concept and cell: searching
  // "ocean" in them would list every trial of concept ocean).
  function searchOf(q) {
    const raw = q || "", lead = raw.trimStart();
    if (lead.toLowerCase().startsWith("id:")) return { text: "", id: lead.slice(3).trim().toLowerCase() };
    return { text: raw.toLowerCase(), id: "" };
  }
  function reasoningOf(t) { return t.judge && typeof t.judge.reasoning === "string" ? t.judge.reasoning : ""; }
  // As run/db/browse.py `excerpt` and server.py `list_item`: the text around the first match.
  function excerpt(text, needle, width = 300) {
    if (!needle) return text.slice(0, width);
    const i = text.toLowerCase().indexOf(needle);
    if (i < 0) return null;
    const start = Math.max(0, i - Math.floor(width / 4));
    return (start ? "…" : "") + text.slice(start, start + width);
  }
  function listItem(t, needle) {
    const answer = t.response || "";
    let shown = excerpt(answer, needle), of = "answer";
    if (shown === null && reasoningOf(t)) { shown = excerpt(reasoningOf(t), needle); of = "reasoning"; }
    return { ...t, excerpt: shown || answer.slice(0, 300), excerpt_of: of };
  }
  function isNum(x) { return typeof x === "number"; }

  function answerOf(t) {
    const a = t.judge && t.judge.answer;
    return typeof a === "string" ? a.toLowerCase() : null;
  }
  function flagOk(t, name, want) {
    if (!want) return true;
    return t.judge !== null && t.judge[name] === (want === "true");
  }

  return { LocalBackend, searchOf, answerOf, isNum };
})();
