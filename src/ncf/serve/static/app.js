"use strict";
// The page of `ncf serve`: plain DOM, text set with textContent only (titles are data).
const $ = (id) => document.getElementById(id);
const picks = new Map();  // raw item id -> label
let hasCatalog = true;

function label(item) {
  if (!hasCatalog || !item.title) return `item ${item.item}`;
  return item.year ? `${item.title} (${item.year})` : item.title;
}

function say(text) { $("status").textContent = text || ""; }

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function model() { return $("model").value; }

function filmButton(item) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link film";
  b.dataset.item = item.item;
  b.textContent = label(item);
  b.setAttribute("aria-label", `Show films similar to ${label(item)}`);
  b.addEventListener("click", () => showSimilar(item));
  return b;
}

function fill(list, items, render) {
  list.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.dataset.item = item.item;
    render(li, item);
    return li;
  }));
}

async function search() {
  const q = $("search").value.trim();
  if (!q) { $("search-results").replaceChildren(); return; }
  try {
    const res = await api(`/api/search?q=${encodeURIComponent(q)}&limit=8`);
    if ($("search").value.trim() !== q) return;  // a newer query is on its way
    fill($("search-results"), res.items, (li, item) => {
      li.append(filmButton(item));
      const add = document.createElement("button");
      add.type = "button";
      add.className = "small add";
      add.textContent = picks.has(String(item.item)) ? "Added" : "Add";
      add.disabled = picks.has(String(item.item));
      add.setAttribute("aria-label", `Add ${label(item)} to your picks`);
      add.addEventListener("click", () => { addPick(item); add.textContent = "Added"; add.disabled = true; });
      li.append(add);
    });
    if (!res.items.length) say(`No title contains "${q}".`); else say("");
  } catch (e) { say(e.message); }
}

function renderPicks() {
  fill($("picks"), [...picks.entries()].map(([item, text]) => ({ item, text })), (li, p) => {
    li.append(document.createTextNode(p.text));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${p.text}`);
    remove.addEventListener("click", () => { picks.delete(p.item); renderPicks(); search(); });
    li.append(remove);
  });
  $("recommend").disabled = picks.size === 0;
}

function addPick(item) { picks.set(String(item.item), label(item)); renderPicks(); }

function pickId(key) { return /^-?\d+$/.test(key) ? Number(key) : key; }

async function recommend() {
  say("");
  $("recommend").disabled = true;
  try {
    const res = await api("/api/recommendations", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ items: [...picks.keys()].map(pickId), k: 10, model: model() }),
    });
    fill($("recs"), res.items, (li, item) => {
      li.append(filmButton(item));
      const why = document.createElement("span");
      why.className = "why";
      why.textContent = `because you liked ${label(item.because)}`;
      li.append(why);
    });
  } catch (e) { say(e.message); }
  $("recommend").disabled = picks.size === 0;
}

async function showSimilar(item) {
  try {
    const res = await api(`/api/items/${encodeURIComponent(item.item)}/similar?k=10`);
    $("similar-panel").hidden = false;
    $("similar-about").textContent = `Films closest to ${label(res.item)} (${res.vectors}).`;
    fill($("similar"), res.items, (li, it) => li.append(filmButton(it)));
    $("similar-panel").scrollIntoView({ block: "nearest" });
  } catch (e) { say(e.message); }
}

async function lookUp(event) {
  event.preventDefault();
  const user = $("user-id").value.trim();
  if (!user) return;
  say("");
  try {
    const id = encodeURIComponent(user);
    const [hist, recs] = await Promise.all([
      api(`/api/users/${id}/history?limit=20`),
      api(`/api/users/${id}/recommendations?k=10&model=${encodeURIComponent(model())}`),
    ]);
    $("history-title").textContent = `Seen (${hist.count}, most popular first)`;
    fill($("history"), hist.items, (li, it) => li.append(filmButton(it)));
    fill($("user-recs"), recs.items, (li, it) => li.append(filmButton(it)));
  } catch (e) { say(e.message); }
}

async function start() {
  try {
    const info = await api("/api/info");
    hasCatalog = info.catalog;
    const data = info.data.path ? info.data.path.split("/").filter(Boolean).pop() : info.run;
    $("run-info").textContent = `${data}: ${info.users.toLocaleString()} users, ` +
      `${info.items.toLocaleString()} films, ${info.interactions.toLocaleString()} ratings`;
    for (const m of info.models.filter((m) => m.fold_in)) {
      const o = document.createElement("option");
      o.value = m.name; o.textContent = m.label;
      o.selected = m.name === info.default_model;
      $("model").append(o);
    }
  } catch (e) { say(e.message); }
}

let timer = null;
$("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 150); });
$("recommend").addEventListener("click", recommend);
$("user-form").addEventListener("submit", lookUp);
start();
