// memnet dashboard: polls the daemon's /api/ every 2 s with the bearer token from the URL's
// #token= (kept in sessionStorage, removed from the address bar). No framework, no CDN.
"use strict";

const POLL_MS = 2000;
const token = (() => {
  const m = location.hash.match(/token=([A-Za-z0-9_\-]+)/);
  if (m) {
    sessionStorage.setItem("memnet-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("memnet-token");
})();

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

async function api(path, method = "GET") {
  const r = await fetch(path, { method, headers: { Authorization: "Bearer " + token } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

const short = (s) => (s && s.length > 20 ? s.slice(0, 10) + "…" + s.slice(-6) : s || "");

const rendered = new Map();   // what each part last showed: redraw only what changed
function changed(key, data) {
  const text = JSON.stringify(data);
  if (rendered.get(key) === text) return false;
  rendered.set(key, text);
  return true;
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function overview() {
  const o = await api("/api/overview");
  if (!changed("overview", { ...o, time: 0, node: { ...o.node, uptime: Math.floor(o.node.uptime / 10) } })) return;
  const n = o.node;
  $("identity").textContent = n.peer_id;
  const model = o.model || {};
  const rows = [
    ["peer id", n.peer_id], ["author", o.author], ["addresses", (n.addrs || []).join("  ")],
    ["uptime", n.uptime + " s"], ["peers", `${n.connected} connected, ${n.routing_table} in the routing table`],
    ["cubes", `${n.cubes} stored, ${n.providing} announced`], ["served", size(n.served_bytes || 0)],
    ["model", `${model.model || "?"} (${model.state}), ${model.requests || 0} requests, ` +
              `${model.reused_tokens || 0} of ${model.prompt_tokens || 0} prompt tokens reused`],
    ["API", `${o.api.url}/v1` + (o.api.token_required_for_api ? " (token required)" : "")],
    ["services", Object.entries(n.services || {}).map(([k, v]) => `${k}: ${v}`).join(", ")],
  ];
  $("node").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

async function peers() {
  const list = await api("/api/peers");
  if (!changed("peers", list)) return;
  $("peer-count").textContent = `(${list.length})`;
  setRows($("peers").tBodies[0], list.map((p) =>
    el("tr", {}, el("td", { class: "mono" }, short(p.peer_id)), el("td", { class: "mono" }, p.addrs.join(" ")))));
}

function filterQuery() {
  const q = new URLSearchParams();
  for (const [key, id] of [["kind", "f-kind"], ["author", "f-author"], ["tag", "f-tag"], ["pinned", "f-pinned"]]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  return q.toString();
}

async function act(cid, action, button) {
  button.disabled = true;
  try {
    const r = await api(`/api/cubes/${cid}/${action}`, "POST");
    if (action === "verify") button.textContent = r.verified ? "verified ✓" : "FAILED";
    await cubes();
  } catch (e) {
    button.textContent = "error";
    button.title = e.message;
  } finally {
    button.disabled = false;
  }
}

async function cubes() {
  const r = await api("/api/cubes?" + filterQuery());
  if (!changed("cubes", r)) return;
  $("cube-count").textContent = `(${r.total})`;
  setRows($("cubes").tBodies[0], r.cubes.map((c) => {
    const pin = el("button", { type: "button", class: "pin", "data-cid": c.cid },
                   c.pinned ? "unpin" : "pin");
    pin.addEventListener("click", (e) => { e.stopPropagation(); act(c.cid, c.pinned ? "unpin" : "pin", pin); });
    const verify = el("button", { type: "button", class: "verify" }, "verify");
    verify.addEventListener("click", (e) => { e.stopPropagation(); act(c.cid, "verify", verify); });
    const row = el("tr", { class: "cube", "data-cid": c.cid },
      el("td", { class: "mono", title: c.cid }, short(c.cid)), el("td", {}, c.kind), el("td", {}, size(c.size)),
      el("td", {}, [c.name ? `${c.name} v${c.version}` : "", ...c.tags].filter(Boolean).join(", ")),
      el("td", { class: "mono", title: c.author }, short(c.author)),
      el("td", { class: "pinned" }, c.pinned ? "yes" : "no"), el("td", {}, pin, " ", verify));
    row.addEventListener("click", () => details(c.cid));
    return row;
  }));
}

async function details(cid) {
  const d = await api("/api/cubes/" + cid);
  $("d-cid").textContent = cid;
  const lineage = d.lineage;
  const refs = (list) => list.map((p) => `${short(p.cid)}${p.here ? " (" + p.kind + ")" : " (not here)"}`).join(", ");
  $("d-lineage").textContent = `parents: ${refs(lineage.parents) || "none"} · supersedes: ` +
    (lineage.supersedes ? refs([lineage.supersedes]) : "none");
  $("d-manifest").textContent = JSON.stringify(d.manifest, null, 1);
  $("details").hidden = false;
}

async function fetches() {
  const list = await api("/api/fetches");
  if (!changed("fetches", list)) return;
  const items = list.map((f) => el("li", {}, short(f.cube) + " ",
    el("progress", { max: String(f.total || 1), value: String(f.done) }),
    ` ${size(f.done)} of ${size(f.total)}`));
  $("fetches").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "none")]));
}

function plot(points) {
  const svg = $("reuse-plot");
  const W = 520, H = 180, pad = 28;
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const last = points.slice(-60);
  const maxTokens = Math.max(1, ...last.map((p) => p.prompt_tokens || 0));
  const bw = (W - 2 * pad) / Math.max(1, last.length);
  const nodes = [make("text", { x: 2, y: 12 }, `tokens reused per generation (max ${maxTokens}); line: seconds saved, cumulative`)];
  let saved = 0;
  const savedTotal = Math.max(0.001, last.reduce((s, p) => s + (p.saved_s || 0), 0));
  const line = [];
  last.forEach((p, i) => {
    const h = ((p.reused || 0) / maxTokens) * (H - 2 * pad);
    nodes.push(make("rect", { class: "bar", x: pad + i * bw, y: H - pad - h, width: Math.max(1, bw - 2), height: h }));
    saved += p.saved_s || 0;
    line.push(`${pad + i * bw + bw / 2},${H - pad - (saved / savedTotal) * (H - 2 * pad)}`);
  });
  if (line.length) nodes.push(make("polyline", { class: "line", points: line.join(" ") }));
  nodes.push(make("text", { x: pad, y: H - 8 }, `${last.length} generations`));
  svg.replaceChildren(...nodes);
}

async function reuse() {
  const r = await api("/api/reuse");
  if (!changed("reuse", r)) return;
  $("reuse-summary").textContent = `${r.reused_tokens} prompt tokens reused, ≈ ${r.saved_s.toFixed(2)} s of prefill ` +
    `saved over ${r.points.length} generations`;
  plot(r.points);
}

async function audit() {
  const list = await api("/api/audit?last=50");
  if (!changed("audit", list)) return;
  setRows($("audit").tBodies[0], list.reverse().map((e) => el("tr", {},
    el("td", {}, new Date(e.time / 1e6).toLocaleTimeString()), el("td", {}, e.kind),
    el("td", {}, (e.preview || "").slice(0, 80)), el("td", {}, e.extra ? `${e.extra.reused ?? "-"}/${e.extra.prompt_tokens ?? "-"}` : ""),
    el("td", { class: "mono" }, (e.cubes || []).map((c) => `${c.role}:${short(c.cid)}`).join(" ")))));
}

async function trust() {
  const t = await api("/api/trust");
  if (!changed("trust", t)) return;
  $("trust").textContent = JSON.stringify(t.policy, null, 1) + `\n(self = ${t.self})`;
}

async function refresh() {
  try {
    await Promise.all([overview(), peers(), cubes(), fetches(), reuse(), audit(), trust()]);
    $("live").textContent = "live";
    $("live").className = "badge ok";
  } catch (e) {
    $("live").textContent = "error: " + e.message;
    $("live").className = "badge bad";
  }
}

if (!token) {
  $("no-token").hidden = false;
  $("live").textContent = "no token";
} else {
  $("filters").addEventListener("input", () => cubes());
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("d-close").addEventListener("click", () => { $("details").hidden = true; });
  refresh();
  setInterval(refresh, POLL_MS);
}
