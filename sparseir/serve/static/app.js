// The sparseir search page: plain JS against the server's JSON API, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const BARS = 12;        // contributions drawn per hit
const SNIPPET = 280;    // characters of text shown per hit
let stored = false;     // whether the index keeps documents (titles, snippets, the document view)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

// `text` with each source span in a <mark>; `width` > 0 shows that many characters around the first span.
function marked(text, sources, width) {
  const spans = sources.filter((s) => s.start !== null).sort((a, b) => a.start - b.start);
  const start = width && spans.length ? Math.max(0, spans[0].start - 60) : 0;
  const end = width ? Math.min(text.length, start + width) : text.length;
  const out = [start ? "…" : ""];
  let pos = start;
  for (const s of spans) {
    if (s.start < pos || s.end > end) continue;
    out.push(text.slice(pos, s.start), el("mark", {}, text.slice(s.start, s.end)));
    pos = s.end;
  }
  out.push(text.slice(pos, end) + (end < text.length ? "…" : ""));
  return out;
}

// Hovering a term marks its source words in the query and the document (fetched once per hit).
async function showSources(hit, term, snippet) {
  hit.sources ??= api("POST", "/explain", { query: query(), doc_id: hit.doc_id, provenance: true })
    .then((r) => Object.fromEntries(r.explain.map((c) => [c.term, c])));
  try {
    const c = (await hit.sources)[term] || {};
    snippet.replaceChildren(...marked((hit.doc || {}).text || "", c.doc_sources || [], SNIPPET));
    $("query-view").replaceChildren(...marked(query(), c.query_sources || [], 0));
  } catch (err) {
    $("query-view").textContent = err.message;
  }
}

const query = () => new URLSearchParams(location.search).get("q") || "";
const PINNED = new URLSearchParams(location.search).get("term");  // ?term=T: mark T's sources without hovering

function chart(contributions, hit, snippet) {
  const top = contributions.slice(0, BARS);
  const max = Math.max(...top.map((c) => c.product), 1e-12);
  const rows = top.map((c) => el("div", { class: "bar-row", onmouseenter: () => showSources(hit, c.term, snippet),
      onmouseleave: () => { snippet.replaceChildren(...marked((hit.doc || {}).text || "", [], SNIPPET));
                            $("query-view").textContent = query(); }, title:
      `${c.term}: query ${c.query_weight.toFixed(3)} × doc ${c.doc_weight.toFixed(3)} = ${c.product.toFixed(4)}` },
    el("span", { class: "bar-term", onclick: () => showDimension(c.term) }, c.term),
    el("span", { class: "bar-track" }, el("span", { class: "bar", style: `display:block;width:${(100 * c.product / max).toFixed(1)}%` })),
    el("span", { class: "bar-value" }, c.product.toFixed(3))));
  return el("div", { class: "chart" },
    el("div", { class: "chart-title" }, `query weight × doc weight, top ${top.length} of ${contributions.length} dimensions`),
    ...rows);
}

function hitItem(hit) {
  const doc = hit.doc || {};
  const snippet = el("p", { class: "snippet" }, ...marked(doc.text || "", [], SNIPPET));
  const title = el("a", { class: "title", href: `#doc=${encodeURIComponent(hit.doc_id)}`,
                          onclick: (e) => { e.preventDefault(); showDoc(hit.doc_id); } },
                   doc.title || hit.doc_id);
  const left = el("div", {},
    el("div", { class: "hit-head" }, el("span", { class: "rank" }, `${hit.rank}.`), title,
       el("span", { class: "score" }, hit.score.toFixed(4))),
    doc.title ? el("div", { class: "docid" }, hit.doc_id) : "",
    snippet);
  if ((hit.explain || []).some((c) => c.term === PINNED)) hit.pending = showSources(hit, PINNED, snippet);
  return el("li", { class: "hit", "data-doc-id": hit.doc_id }, left, chart(hit.explain || [], hit, snippet));
}

async function search(query) {
  const k = Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 10));
  const body = { query, k, explain: true, explain_terms: 64 };
  if (stored) body.fields = ["title", "text"];
  if ($("approx").checked) body.approx = {};
  $("status").textContent = "Searching…";
  $("status").classList.remove("error");
  try {
    const res = await api("POST", "/search", body);
    $("query-view").textContent = query;
    $("results").replaceChildren(...res.hits.map(hitItem));
    await Promise.all(res.hits.map((h) => h.pending));
    $("status").textContent = `${res.hits.length} results in ${res.took_ms.toFixed(1)} ms (commit ${res.generation})`;
  } catch (err) {
    $("results").replaceChildren();
    $("status").textContent = err.message;
    $("status").classList.add("error");
  }
}

async function showDoc(id) {
  $("doc-title").textContent = id;
  $("doc-id").textContent = id;
  $("doc-text").textContent = "";
  $("doc-fields").replaceChildren();
  $("doc-view").hidden = false;
  try {
    const doc = await api("GET", `/documents/${encodeURIComponent(id)}`);
    $("doc-title").textContent = doc.title || id;
    $("doc-text").textContent = doc.text || "";
    const extra = Object.entries(doc).filter(([k]) => !["id", "title", "text"].includes(k));
    $("doc-fields").replaceChildren(...extra.flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2))]));
  } catch (err) {
    $("doc-text").textContent = err.message;
    $("doc-text").classList.add("error");
  }
}

// The dimension browser: a term's top documents (with the words it comes from), frequency and weights.
async function showDimension(term) {
  $("doc-title").textContent = term;
  $("doc-fields").replaceChildren();
  $("doc-view").hidden = false;
  try {
    const r = await api("GET", `/inspect?term=${encodeURIComponent(term)}&top=10&spans=${stored}`);
    const q = r.weights.quantiles;
    $("doc-id").textContent = `dimension ${r.dim} · in ${r.df.toLocaleString()} of ${r.n_docs.toLocaleString()} ` +
      `documents · weight median ${(q["0.5"] || 0).toFixed(3)}, max ${(q["1.0"] || 0).toFixed(3)}`;
    $("doc-text").textContent = r.sae ? `SAE feature ${r.sae.label || ""} · ${r.sae.note || ""}` : "";
    $("doc-fields").replaceChildren(...r.top.flatMap((d) => [
      el("dt", {}, `${d.weight.toFixed(3)}  ${d.title || d.doc_id}`),
      el("dd", {}, ...(d.context ? d.context.split(/\[\[|\]\]/).map((p, i) => (i % 2 ? el("mark", {}, p) : p)) : []))]));
  } catch (err) {
    $("doc-id").textContent = err.message;
  }
}

function closeDoc() { $("doc-view").hidden = true; }

async function init() {
  try {
    const s = await api("GET", "/stats");
    stored = Boolean(s.store);
    $("index-info").textContent =
      `${s.n_docs.toLocaleString()} documents · ${s.n_dims.toLocaleString()} dimensions · ${s.encoder.name}` +
      `${s.encoder.model ? " (" + s.encoder.model + ")" : ""} · commit ${s.generation}`;
  } catch (err) {
    $("index-info").textContent = err.message;
  }
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    const url = new URL(location.href);
    url.searchParams.set("q", q);
    history.replaceState(null, "", url);
    search(q);
  });
  $("doc-close").addEventListener("click", closeDoc);
  $("doc-view").addEventListener("click", (e) => { if (e.target === $("doc-view")) closeDoc(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDoc(); });
  const params = new URLSearchParams(location.search);
  if (params.get("k")) $("k").value = params.get("k");
  if (params.get("q")) { $("q").value = params.get("q"); await search(params.get("q")); }
  if (params.get("doc")) await showDoc(params.get("doc"));
  if (params.get("inspect")) await showDimension(params.get("inspect"));
  document.body.dataset.ready = "1";
}

init();
