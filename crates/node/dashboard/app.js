// Signal Mesh dashboard: polls /status and draws the mesh. No framework, no build step.
// Everything shown comes from other nodes' heartbeats too, so it is written with textContent
// and attributes only, never parsed as HTML.
'use strict';

const POLL_MS = 1500;
const SVG = 'http://www.w3.org/2000/svg';

const $ = (sel) => document.querySelector(sel);

function short(id) {
  return id.length > 10 ? '…' + id.slice(-6) : id;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min';
  const h = Math.floor(m / 60);
  if (h < 48) return h + ' h ' + (m % 60) + ' min';
  return Math.floor(h / 24) + ' d';
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function drawGraph(status) {
  const g = $('#graph');
  g.replaceChildren();
  const nodes = status.nodes;
  const cx = 240, cy = 200, r = nodes.length > 1 ? 140 : 0;
  const pos = new Map();
  nodes.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / nodes.length;
    pos.set(n.id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a), stale: n.stale });
  });
  const links = svg('g', { class: 'links' });
  for (const l of status.links) {
    const a = pos.get(l.a), b = pos.get(l.b);
    if (!a || !b) continue; // a link to a node not known here
    const line = svg('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, 'data-a': l.a, 'data-b': l.b });
    if (a.stale || b.stale) line.setAttribute('class', 'stale');
    links.append(line);
    if (l.rtt_us) {
      links.append(svg('text', { class: 'rtt', x: (a.x + b.x) / 2 + 4, y: (a.y + b.y) / 2 - 4 },
        (l.rtt_us / 1000).toFixed(1) + ' ms'));
    }
  }
  g.append(links);
  for (const n of nodes) {
    const p = pos.get(n.id);
    const cls = ['node'];
    if (n.local) cls.push('local');
    if (n.stale) cls.push('stale');
    const group = svg('g', { class: cls.join(' '), 'data-node-id': n.id });
    group.append(svg('title', {}, n.id));
    group.append(svg('circle', { cx: p.x, cy: p.y, r: 22 }));
    group.append(svg('text', { class: 'label', x: p.x, y: p.y + 38 }, short(n.id)));
    group.append(svg('text', { class: 'figure', x: p.x, y: p.y + 52 },
      n.edge_peers + ' peers · ' + n.signals_per_second + ' sig/s'));
    g.append(group);
  }
}

function drawNodes(status) {
  const body = $('#nodes tbody');
  body.replaceChildren();
  for (const n of status.nodes) {
    const tr = el('tr', { 'data-node-id': n.id });
    if (n.local) tr.classList.add('local');
    if (n.stale) tr.classList.add('stale');
    const id = el('td', { class: 'id', title: n.id }, short(n.id));
    tr.append(
      id,
      el('td', {}, n.version || '—'),
      el('td', { class: 'num' }, duration(n.uptime_ms)),
      el('td', { class: 'num' }, n.edge_peers),
      el('td', { class: 'num' }, n.topics),
      el('td', { class: 'num' }, n.links),
      el('td', { class: 'num' }, n.signals_per_second),
      el('td', { class: 'num' }, n.requests_per_second),
      el('td', { class: 'num' }, n.signals_local + ' · ' + n.signals_forwarded + ' · ' + n.signals_received),
      el('td', { class: 'num' }, n.errors),
      el('td', { class: 'num' }, n.local ? 'this node' : duration(n.last_heard_ms) + ' ago'),
      el('td', {}, n.public_url || '—'),
    );
    body.append(tr);
  }
}

function drawTopics(status) {
  $('#topics-total').textContent = status.topics.total + ' known';
  const body = $('#topics tbody');
  body.replaceChildren();
  if (status.topics.top.length === 0) {
    const tr = el('tr');
    tr.append(el('td', { colspan: 3, class: 'empty' }, 'no topics yet'));
    body.append(tr);
  }
  for (const t of status.topics.top) {
    const tr = el('tr', { 'data-topic-id': t.id });
    tr.append(
      el('td', { class: 'id', title: t.id }, t.id.slice(0, 16) + '…'),
      el('td', { class: 'num' }, t.peers),
      el('td', { class: 'num' }, t.local_members),
    );
    body.append(tr);
  }
}

function draw(status) {
  const peers = status.nodes.reduce((sum, n) => sum + n.edge_peers, 0);
  const stale = status.nodes.filter((n) => n.stale).length;
  $('#summary').textContent =
    status.nodes.length + ' nodes · ' + status.links.length + ' links · ' + peers + ' edge peers' +
    (stale ? ' · ' + stale + ' stale' : '') + ' · seen from ' + short(status.node) +
    ' · ' + new Date(status.generated_ms).toLocaleTimeString();
  const state = $('#state');
  state.textContent = status.ready ? 'ready' : 'starting';
  state.className = 'badge ' + (status.ready ? 'ready' : 'starting');
  drawGraph(status);
  drawNodes(status);
  drawTopics(status);
  document.body.dataset.nodes = String(status.nodes.length);
}

async function poll() {
  try {
    const res = await fetch('/status', { cache: 'no-store' });
    if (!res.ok) throw new Error('/status answered ' + res.status);
    draw(await res.json());
    $('#error').hidden = true;
  } catch (e) {
    $('#error').textContent = 'cannot read /status: ' + e.message;
    $('#error').hidden = false;
    const state = $('#state');
    state.textContent = 'unreachable';
    state.className = 'badge down';
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
