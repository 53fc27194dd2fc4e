// The Trellis UI: one page, hash routes, every figure read from the management API with the
// browser's session (OIDC login) or an API token kept in this tab's sessionStorage.
// Everything from the API is inserted as text (esc), never as markup.
'use strict';

const REFRESH_MS = 5000;
const state = { login: 'token', page: 'overview', args: [], filter: { text: '', kind: '', state: '' }, timer: null };

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

async function api(path) {
  const headers = { 'x-trellis-ui': '1' };
  const token = sessionStorage.getItem('trellis-token');
  if (token) headers.authorization = 'Bearer ' + token;
  const response = await fetch(path, { headers, credentials: 'same-origin' });
  if (response.status === 401) {
    if (state.login === 'oidc' && !token) { location.assign('/ui/'); }
    throw new Unauthenticated();
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || ('HTTP ' + response.status));
  return body;
}
class Unauthenticated extends Error {}

function badge(text, cls) { return `<span class="badge ${esc(cls ?? text)}">${esc(text)}</span>`; }
function when(unix) {
  if (!unix) return '—';
  const days = (unix * 1000 - Date.now()) / 86400000;
  const date = new Date(unix * 1000).toISOString().slice(0, 16).replace('T', ' ');
  const rel = days >= 0 ? `in ${days < 1 ? Math.round(days * 24) + ' h' : Math.round(days) + ' d'}` : 'EXPIRED';
  return `${esc(date)} <span class="muted">(${rel})</span>`;
}
function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + '…' : text; }
function key(r) { return `${r.kind}/${r.metadata.namespace || ''}/${r.metadata.name}`; }

// A small YAML writer for display: the API's JSON as an operator would have written it.
function yaml(value, indent = '') {
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return value.map(v => {
      const inner = yaml(v, indent + '  ');
      return `\n${indent}- ` + (typeof v === 'object' && v !== null && !Array.isArray(v) ? inner.trimStart() : inner);
    }).join('');
  }
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (!keys.length) return '{}';
    return keys.map(k => {
      const v = value[k];
      const inner = yaml(v, indent + '  ');
      return `\n${indent}${k}:` + (v && typeof v === 'object' && Object.keys(v).length ? inner : ' ' + inner);
    }).join('');
  }
  if (typeof value === 'string') return /^[\w./:@-]+$/.test(value) && !/^(true|false|null|[\d.]+)$/.test(value) ? value : JSON.stringify(value);
  return String(value);
}

// === pages ===

const pages = {
  async overview() {
    const [{ clusters }, { items }] = await Promise.all([api('/api/v1/clusters'), api('/api/v1/resources')]);
    const insights = await insightList().catch(() => []);
    const names = Object.keys(clusters);
    const connected = names.filter(n => clusters[n].connected).length;
    const byState = {};
    for (const r of items) { const s = r.status?.state || 'PENDING'; byState[s] = (byState[s] || 0) + 1; }
    const rows = names.map(n => {
      const c = clusters[n];
      const proxies = c.proxies || [];
      return `<tr><td>${esc(n)}</td><td>${c.connected ? badge('connected', 'ok') : badge('disconnected', 'error')}</td>
        <td>${esc(c.agentVersion || '—')}</td>
        <td>${proxies.filter(p => p.inSync).length}/${proxies.length} in sync</td><td>${esc(c.workloads ?? 0)}</td>
        <td><code>${esc(c.ackedVersion || '—')}</code></td><td>${when(c.clientCertValidity?.[1])}</td><td>${when(c.intermediateValidity?.[1])}</td></tr>`;
    }).join('');
    const problems = items.filter(r => ['FAILED', 'INVALID', 'WARNING'].includes(r.status?.state));
    return `<h1>Overview</h1>
      <div class="cards">
        <div class="card"><div class="n">${connected}/${names.length}</div><div class="l">clusters connected</div></div>
        <div class="card"><div class="n">${items.length}</div><div class="l">resources</div></div>
        ${Object.entries(byState).map(([s, n]) => `<div class="card"><div class="n">${n}</div><div class="l">${badge(s)}</div></div>`).join('')}
        <div class="card"><div class="n">${insights.filter(i => i.severity !== 'ok').length}</div><div class="l"><a href="#/insights">insights</a></div></div>
      </div>
      <h2>Clusters</h2>
      <table><tr><th>Cluster</th><th>Agent</th><th>Version</th><th>Proxies</th><th>Workloads</th><th>Config acked</th><th>Agent certificate expires</th><th>Intermediate CA expires</th></tr>${rows}</table>
      <h2>Resources needing attention</h2>
      ${problems.length ? resourceTable(problems) : '<p class="muted">None: every resource is ACCEPTED.</p>'}`;
  },

  async resources() {
    const { items } = await api('/api/v1/resources');
    const kinds = [...new Set(items.map(r => r.kind))].sort();
    const f = state.filter;
    const shown = items.filter(r => (!f.kind || r.kind === f.kind) && (!f.state || (r.status?.state || '') === f.state)
      && (!f.text || key(r).toLowerCase().includes(f.text.toLowerCase())));
    return `<h1>Resources</h1>
      <div class="filters">
        <input id="f-text" placeholder="filter by name" value="${esc(f.text)}">
        <select id="f-kind"><option value="">all kinds</option>${kinds.map(k => `<option ${k === f.kind ? 'selected' : ''}>${esc(k)}</option>`).join('')}</select>
        <select id="f-state"><option value="">any status</option>${['ACCEPTED', 'WARNING', 'FAILED', 'INVALID'].map(s => `<option ${s === f.state ? 'selected' : ''}>${s}</option>`).join('')}</select>
        <span class="muted">${shown.length} of ${items.length}</span>
      </div>${resourceTable(shown)}`;
  },

  async resource(kind, namespace, name) {
    const path = [kind, namespace || '_', name].map(encodeURIComponent).join('/');
    const described = await api(`/api/v1/describe/${path}`);
    const r = described.resource;
    const target = `${kind}/${namespace}/${name}`;
    const audit = await api(`/api/v1/audit?target=${encodeURIComponent(target)}&limit=20`).catch(e => ({ denied: e.message }));
    const status = r.status || {};
    const delivery = described.delivery || {};
    const clusters = Object.entries(delivery.clusters || {}).map(([c, d]) =>
      `<tr><td>${esc(c)}</td><td>${esc(d.current)}/${esc(d.proxies)} proxies current</td><td>${esc((d.pending || []).join(', ') || '—')}</td></tr>`).join('');
    return `<h1>${esc(kind)} <span class="muted">${esc(namespace)}/</span>${esc(name)} ${badge(status.state || 'PENDING')}</h1>
      ${status.message ? `<h2>Why</h2><div class="why" id="status-message">${esc(status.message)}</div>` : ''}
      <h2>Delivery</h2><p>${esc(delivery.summary || '—')}</p>
      ${clusters ? `<table><tr><th>Cluster</th><th>Proxies</th><th>Pending</th></tr>${clusters}</table>` : ''}
      ${(delivery.rejected || []).length ? `<div class="why">${esc(JSON.stringify(delivery.rejected))}</div>` : ''}
      <h2>YAML</h2><pre>${esc(yaml({ apiVersion: r.apiVersion, kind: r.kind, metadata: r.metadata, spec: r.spec }).trimStart())}</pre>
      <h2>History</h2>
      ${audit.denied ? `<p class="muted">The audit log is not yours to read (${esc(audit.denied)}).</p>` : ''}
      <table><tr><th>When</th><th>Who</th><th>Action</th><th>Result</th><th>Message</th></tr>
      ${(audit.records || []).map(a => `<tr><td>${esc(new Date(a.time * 1000).toISOString().slice(0, 19).replace('T', ' '))}</td><td>${esc(a.user)}</td><td>${esc(a.action)}</td><td>${badge(a.result, a.result === 'ok' ? 'ok' : 'error')}</td><td>${esc(a.message)}</td></tr>`).join('')}</table>`;
  },

  async workspaces() {
    const [ws, settings] = await Promise.all([api('/api/v1/resources?kind=Workspace'), api('/api/v1/resources?kind=WorkspaceSettings')]);
    const names = ws.items.map(w => w.metadata.name);
    const links = [];
    const rows = ws.items.map(w => {
      const s = settings.items.find(x => x.metadata.namespace && (w.spec?.workloadClusters || []).some(c => (c.namespaces || []).some(n => n.name === x.metadata.namespace || n.name === '*')));
      const owns = (w.spec?.workloadClusters || []).map(c => `${c.name || '*'}: ${(c.namespaces || []).map(n => n.name).join(', ') || '*'}`).join('; ');
      const imports = (s?.spec?.importFrom || []).flatMap(i => (i.workspaces || []).map(x => x.name || JSON.stringify(x.selector || {})));
      const exports = (s?.spec?.exportTo || []).flatMap(e => (e.workspaces || []).map(x => x.name || JSON.stringify(x.selector || {})));
      for (const from of imports) if (names.includes(from)) links.push([from, w.metadata.name]);
      return `<tr><td>${esc(w.metadata.name)}</td><td>${esc(owns || '—')}</td><td>${esc(imports.join(', ') || '—')}</td><td>${esc(exports.join(', ') || '—')}</td></tr>`;
    }).join('');
    return `<h1>Workspaces</h1>${ws.items.length ? drawBoxes(names, links) : ''}
      <table><tr><th>Workspace</th><th>Owns (cluster: namespaces)</th><th>Imports from</th><th>Exports to</th></tr>${rows || '<tr><td colspan="4" class="muted">No workspaces: all config is in one global workspace.</td></tr>'}</table>`;
  },

  async graph() {
    const g = await api('/api/v1/graph');
    const edges = g.edges || [];
    const short = h => h.split('.')[0] ;
    const nodes = [...new Set(edges.flatMap(e => [e.source, short(e.destination)]))];
    // One line per pair of services: a destination's per-cluster or per-subset edges summed.
    const pairs = new Map();
    for (const e of edges) {
      const k = e.source + '→' + short(e.destination);
      const p = pairs.get(k) || { from: e.source, to: short(e.destination), rps: 0, err: 0, p99: null };
      p.rps += e.requestsPerSecond; p.err += e.errorsPerSecond;
      if (e.p99Ms != null) p.p99 = Math.max(p.p99 ?? 0, e.p99Ms);
      pairs.set(k, p);
    }
    const body = edges.length ? drawGraph(nodes, [...pairs.values()].map(p => ({
      from: p.from, to: p.to,
      label: `${p.rps.toFixed(2)} rps · ${(100 * p.err / (p.rps || 1)).toFixed(1)}% err` + (p.p99 != null ? ` · p99 ${Math.round(p.p99)} ms` : ''),
      bad: p.err > 0,
    }))) : `<p class="muted">${esc(g.message || 'No traffic in the last minute.')}</p>`;
    const rows = edges.map(e => `<tr class="edge-row"><td>${esc(e.source)}</td><td>${esc(e.destination)}:${esc(e.port)} ${esc(e.subset || '')}</td><td>${e.requestsPerSecond.toFixed(2)}</td><td>${(100 * e.errorsPerSecond / (e.requestsPerSecond || 1)).toFixed(1)}%</td><td>${e.p99Ms != null ? Math.round(e.p99Ms) + ' ms' : '—'}</td></tr>`).join('');
    return `<h1>Service graph <span class="muted">(last ${esc(g.window || '1m')}, from ${esc(g.source || 'no metrics source')})</span></h1>${body}
      ${rows ? `<h2>Edges</h2><table><tr><th>From</th><th>To</th><th>Requests/s</th><th>Errors</th><th>p99</th></tr>${rows}</table>` : ''}`;
  },

  async proxies(cluster, proxy) {
    const { clusters } = await api('/api/v1/clusters');
    const rows = Object.entries(clusters).flatMap(([c, s]) => (s.proxies || []).map(p =>
      `<tr class="link" data-href="#/proxies/${encodeURIComponent(c)}/${encodeURIComponent(p.id)}"><td>${esc(c)}</td><td>${esc(p.id)}</td><td>${p.inSync ? badge('in sync', 'ok') : badge('behind', 'warning')}</td><td><code>${esc(p.configVersion)}</code></td></tr>`)).join('');
    let config = '';
    if (cluster && proxy) {
      // The proxy's live Envoy config, read by its agent; without the right to it, what the
      // management server sends the cluster.
      try {
        const dump = await api(`/api/v1/clusters/${encodeURIComponent(cluster)}/proxies/${encodeURIComponent(proxy)}/config`);
        config = `<h2>${esc(proxy)}: live Envoy config</h2><pre id="proxy-config">${esc(JSON.stringify(dump, null, 2))}</pre>`;
      } catch (e) {
        if (e instanceof Unauthenticated) throw e;
        const t = await api('/api/v1/translation').catch(() => null);
        config = `<h2>${esc(proxy)}</h2><p class="muted">Its live config: ${esc(e.message)}.</p>` +
          (t ? `<h2>What ${esc(cluster)}'s proxies are sent</h2><pre>${esc(JSON.stringify(t.clusters?.[cluster] ?? {}, null, 2))}</pre>` : '');
      }
    }
    return `<h1>Proxies</h1><table><tr><th>Cluster</th><th>Proxy</th><th>Config</th><th>Version</th></tr>${rows}</table>${config}`;
  },

  async insights() {
    const list = await insightList();
    return `<h1>Insights</h1><table><tr><th>Severity</th><th>Code</th><th>Target</th><th>Summary</th><th>Fix</th></tr>
      ${list.map(i => `<tr><td>${badge(i.severity)}</td><td>${esc(i.code || i.check || '')}</td><td>${esc(i.target || '')}</td><td>${esc(i.summary || i.message)}</td><td>${esc(i.fix || '')}</td></tr>`).join('')}</table>`;
  },
};

async function insightList() {
  try { const r = await api('/api/v1/insights'); return r.insights || r.items || []; }
  catch (e) { if (e instanceof Unauthenticated) throw e; const c = await api('/api/v1/check'); return c.findings || []; }
}

function resourceTable(items) {
  return `<table><tr><th>Kind</th><th>Namespace</th><th>Name</th><th>Status</th><th>Message</th></tr>
    ${items.map(r => `<tr class="link" data-href="#/resource/${[r.kind, r.metadata.namespace || '_', r.metadata.name].map(encodeURIComponent).join('/')}">
      <td>${esc(r.kind)}</td><td>${esc(r.metadata.namespace || '')}</td><td>${esc(r.metadata.name)}</td><td>${badge(r.status?.state || 'PENDING')}</td><td>${esc(clip(r.status?.message || '', 160))}</td></tr>`).join('')}</table>`;
}

function drawBoxes(names, links) {
  const w = 170, gap = 40, h = 44, width = Math.max(400, names.length * (w + gap));
  const x = n => 20 + names.indexOf(n) * (w + gap);
  const boxes = names.map(n => `<rect class="node" x="${x(n)}" y="60" rx="8" width="${w}" height="${h}"/><text x="${x(n) + 12}" y="87">${esc(n)}</text>`).join('');
  const arrows = links.map(([from, to], i) => {
    const a = x(from) + w / 2, b = x(to) + w / 2, lift = 20 + 12 * i;
    return `<path class="edge" marker-end="url(#arrow)" d="M ${a} 60 C ${a} ${60 - lift}, ${b} ${60 - lift}, ${b} 60"/>`;
  }).join('');
  return `<svg width="${width}" height="130" role="img" aria-label="workspaces and their imports">${marker()}${arrows}${boxes}</svg><p class="muted">Arrows: exported config flowing to the workspace that imports it.</p>`;
}

function drawGraph(nodes, edges) {
  const size = 560, r = 200, cx = size / 2 + 100, cy = size / 2;
  const pos = {};
  nodes.forEach((n, i) => { const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2; pos[n] = [cx + r * Math.cos(a), cy + r * Math.sin(a)]; });
  const lines = edges.map(e => {
    const [x1, y1] = pos[e.from], [x2, y2] = pos[e.to];
    const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1, k = 34 / len;
    return `<line class="edge ${e.bad ? 'bad' : ''}" marker-end="url(#arrow)" x1="${x1 + dx * k}" y1="${y1 + dy * k}" x2="${x2 - dx * k}" y2="${y2 - dy * k}"/>
      <text class="label edge-label" x="${(x1 + x2) / 2 + 6}" y="${(y1 + y2) / 2 - 6}">${esc(e.label)}</text>`;
  }).join('');
  const circles = nodes.map(n => `<circle class="node" cx="${pos[n][0]}" cy="${pos[n][1]}" r="30"/><text x="${pos[n][0]}" y="${pos[n][1] + 4}" text-anchor="middle">${esc(n)}</text>`).join('');
  return `<svg id="graph" width="${size + 200}" height="${size}" role="img" aria-label="service graph">${marker()}${lines}${circles}</svg>`;
}

function marker() {
  return '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#98a2b3"/></marker></defs>';
}

// === login, routing, refresh ===

function tokenForm() {
  document.getElementById('view').innerHTML = `<div class="login"><h1>Sign in</h1>
    <p class="muted">Paste an API token (<code>trellis token create</code>), or open the UI with <code>trellis dashboard</code>.</p>
    <form id="token-form"><input id="token" type="password" autocomplete="off" placeholder="API token"><button>Sign in</button></form></div>`;
  document.getElementById('token-form').addEventListener('submit', event => {
    event.preventDefault();
    sessionStorage.setItem('trellis-token', document.getElementById('token').value.trim());
    location.reload();
  });
}

async function render() {
  clearTimeout(state.timer);
  const [page, ...args] = (location.hash.replace(/^#\/?/, '') || 'overview').split('/').map(decodeURIComponent);
  state.page = pages[page] ? page : 'overview';
  state.args = args;
  document.querySelectorAll('nav a').forEach(a => a.classList.toggle('active', a.dataset.page === state.page || (state.page === 'resource' && a.dataset.page === 'resources')));
  try {
    const html = await pages[state.page](...args);
    const focused = document.activeElement?.id;
    const caret = document.activeElement?.selectionStart;
    document.getElementById('view').innerHTML = html;
    bind();
    if (focused && document.getElementById(focused)) {
      const el = document.getElementById(focused); el.focus();
      if (caret != null && el.setSelectionRange) el.setSelectionRange(caret, caret);
    }
    document.getElementById('updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + ' · refreshes every 5 s';
    state.timer = setTimeout(render, REFRESH_MS);
  } catch (e) {
    if (e instanceof Unauthenticated) { if (state.login !== 'oidc' || sessionStorage.getItem('trellis-token')) { sessionStorage.removeItem('trellis-token'); tokenForm(); } return; }
    document.getElementById('view').innerHTML = `<div class="why">${esc(e.message)}</div>`;
    state.timer = setTimeout(render, REFRESH_MS);
  }
}

function bind() {
  document.querySelectorAll('tr.link').forEach(tr => tr.addEventListener('click', () => { location.hash = tr.dataset.href; }));
  const f = state.filter;
  const on = (id, field) => document.getElementById(id)?.addEventListener('input', ev => { f[field] = ev.target.value; render(); });
  on('f-text', 'text'); on('f-kind', 'kind'); on('f-state', 'state');
}

async function start() {
  // `trellis dashboard` opens /ui/#token=...: keep it for this tab only, and out of the address bar.
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) { sessionStorage.setItem('trellis-token', decodeURIComponent(m[1])); history.replaceState(null, '', '/ui/#/overview'); }
  state.login = (await fetch('/ui/login.json').then(r => r.json()).catch(() => ({}))).login || 'token';
  try {
    const me = await api('/api/v1/whoami');
    const out = state.login === 'oidc' && !sessionStorage.getItem('trellis-token') ? '<a href="/ui/logout">Sign out</a>' : '<a href="#" id="sign-out">Sign out</a>';
    document.getElementById('who').innerHTML = `${esc(me.user)} ${out}`;
    document.getElementById('sign-out')?.addEventListener('click', e => { e.preventDefault(); sessionStorage.removeItem('trellis-token'); location.reload(); });
  } catch (e) {
    if (e instanceof Unauthenticated) { tokenForm(); return; }
  }
  window.addEventListener('hashchange', render);
  render();
}

start();
