// The operators' console: the outbox's backlog, the relay rate, failed and backing-off
// streams (filter, retry one, selected or all), a stream's detail, the live workers and
// web nodes. Polled every few seconds over the admin API; nothing here that the
// `herald` CLI cannot do too. Text from the server is only ever set as textContent.
//
// URL parameters (for demos and tests): ?user=ID signs in as that demo user (development),
// &poll=MS sets the polling period (default 5000, at least 250), &stream=NAME opens a
// stream's detail.

import { Session, demoUsers } from '/portal/session.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(250, Number(params.get('poll')) || 5000);
const USER_KEY = 'herald.ops.user';
const TOKEN_KEY = 'herald.ops.token';

const state = {
  session: null,
  filter: '',
  selected: new Set(),
  open: params.get('stream') || null, // the stream in the detail panel
  timer: null,
  polls: 0,
  streams: [],
};

// -- small DOM helpers ------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return '-';
  if (seconds < 120) return `${seconds.toFixed(1)}s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function until(iso) {
  if (!iso) return '-';
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  return seconds <= 0 ? 'due' : `in ${age(seconds)}`;
}

function kindOf(stream) {
  if (stream.state === 'failed') return ['failed', 'failed'];
  if (stream.attempts > 0 || stream.nextAttemptAt) return ['backoff', 'backing off'];
  return ['active', 'pending'];
}

function notice(text, error = false) {
  const node = $('notice');
  node.textContent = text;
  node.classList.toggle('error', error);
  node.hidden = !text;
}

// -- the backlog and the streams ----------------------------------------------------------
function setNumber(id, value) {
  const node = $(id);
  node.textContent = String(value);
  node.toggleAttribute('data-zero', value === 0 || value === '-');
}

function renderStatus(status) {
  setNumber('events-pending', status.eventsPending);
  setNumber('streams-behind', status.streamsBehind);
  $('oldest-pending').textContent = age(status.oldestPendingAgeSeconds);
  setNumber('failed-count', status.failedStreams);
  setNumber('retrying-count', status.retryingStreams);
  state.streams = status.streams;
  const names = new Set(status.streams.map((s) => s.stream));
  for (const name of [...state.selected]) if (!names.has(name)) state.selected.delete(name);
  const rows = status.streams.map((s) => {
    const [kind, label] = kindOf(s);
    const box = el('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select ${s.stream}`,
                              onchange: (e) => select(s.stream, e.target.checked) });
    box.checked = state.selected.has(s.stream);
    return el('tr', { class: `stream-row ${state.selected.has(s.stream) ? 'selected-row' : ''}`,
                      'data-stream': s.stream, 'data-state': kind },
      el('td', {}, box),
      el('td', {}, el('button', { type: 'button', class: 'link name',
                                  onclick: () => openDetail(s.stream) }, s.stream)),
      el('td', {}, el('span', { class: `chip ${kind}` }, label)),
      el('td', {}, s.pending), el('td', {}, s.attempts), el('td', {}, age(s.oldestPendingAgeSeconds)),
      el('td', {}, until(s.nextAttemptAt)),
      el('td', { class: 'error' }, s.lastError || ''),
      el('td', {}, kind === 'active' ? null
        : el('button', { type: 'button', class: 'small retry', onclick: () => retry([s.stream]) },
             'Retry')));
  });
  $('stream-rows').replaceChildren(...rows);
  $('streams').hidden = rows.length === 0;
  $('no-streams').hidden = rows.length > 0;
  $('no-streams').textContent = state.filter
    ? `No stream behind or failed matches “${state.filter}”.` : 'Nothing is behind or failed.';
  updateSelection();
}

function select(name, on) {
  if (on) state.selected.add(name); else state.selected.delete(name);
  for (const row of document.querySelectorAll('#stream-rows tr')) {
    row.classList.toggle('selected-row', state.selected.has(row.dataset.stream));
  }
  updateSelection();
}

function updateSelection() {
  const count = state.selected.size;
  $('retry-selected').disabled = count === 0;
  $('retry-selected').textContent = count ? `Retry selected (${count})` : 'Retry selected';
  $('select-all').checked = count > 0 && count === state.streams.length;
}

// -- the chart: an SVG drawn by hand ------------------------------------------------------
const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function renderRate(rate) {
  const W = 900, H = 170, top = 4, bottom = 1, left = 2, right = 2;
  const samples = rate.samples;
  const n = samples.length || 1;
  const step = (W - left - right) / n;
  const maxRate = Math.max(1, ...samples.map((s) => s.published + s.rejected));
  const pendings = samples.filter((s) => s.pending !== null).map((s) => s.pending);
  const maxPending = Math.max(1, ...pendings);
  const y = (value, max) => H - bottom - (value / max) * (H - top - bottom);
  const parts = [svg('line', { class: 'grid', x1: 0, x2: W, y1: top, y2: top })];
  const points = [];
  samples.forEach((s, i) => {
    const x = left + i * step;
    const time = new Date(s.at * 1000).toISOString().slice(11, 19);
    if (s.published) {
      const bar = svg('rect', { class: 'bar', x: x + 0.5, width: Math.max(1, step - 1),
                                y: y(s.published, maxRate), height: H - bottom - y(s.published, maxRate) });
      bar.append(svg('title', {}, `${time} UTC: ${s.published} published`));
      parts.push(bar);
    }
    if (s.rejected) {
      const base = y(s.published, maxRate);
      const bar = svg('rect', { class: 'bar rejected', x: x + 0.5, width: Math.max(1, step - 1),
                                y: base - (H - bottom - y(s.rejected, maxRate)),
                                height: H - bottom - y(s.rejected, maxRate) });
      bar.append(svg('title', {}, `${time} UTC: ${s.rejected} refused`));
      parts.push(bar);
    }
    if (s.pending !== null) points.push(`${x + step / 2},${y(s.pending, maxPending)}`);
  });
  if (points.length > 1) parts.push(svg('polyline', { class: 'pending', points: points.join(' ') }));
  for (const point of points) {
    const [cx, cy] = point.split(',');
    parts.push(svg('rect', { class: 'pending-dot', x: cx - 2, y: cy - 2, width: 4, height: 4 }));
  }
  $('rate-chart').replaceChildren(...parts);
  // Labels are HTML around the chart: the SVG stretches to the page's width, text would too.
  $('rate-max').textContent = `${maxRate} events / 10 s`;
  $('pending-max').textContent = pendings.length ? `${maxPending} pending` : '';
  $('rate-summary').textContent = `${rate.published} published (${rate.perSecond}/s)`;
}

// -- a stream's detail ---------------------------------------------------------------------
async function openDetail(name) {
  state.open = name;
  const url = new URL(location.href);
  url.searchParams.set('stream', name);
  history.replaceState(null, '', url);
  await refreshDetail();
  $('detail').scrollIntoView({ block: 'nearest' });
}

function closeDetail() {
  state.open = null;
  $('detail').hidden = true;
  const url = new URL(location.href);
  url.searchParams.delete('stream');
  history.replaceState(null, '', url);
}

async function refreshDetail() {
  if (!state.open) return;
  const name = state.open;
  let d;
  try {
    d = await state.session.api(`/api/admin/outbox/streams/${encodeURIComponent(name)}?events=20`);
  } catch (error) {
    if (state.open !== name) return;
    $('detail').hidden = false;
    $('detail-title').textContent = name;
    $('detail-state').textContent = '';
    $('detail-facts').replaceChildren();
    $('detail-error').textContent = error.message;
    $('detail-events').replaceChildren();
    return;
  }
  if (state.open !== name) return;
  const [kind, label] = kindOf(d);
  $('detail').hidden = false;
  $('detail').dataset.stream = d.stream;
  $('detail').dataset.state = kind;
  $('detail-title').textContent = d.stream;
  $('detail-state').textContent = d.pending ? label : 'healthy';
  $('detail-state').className = `chip ${d.pending || kind !== 'active' ? kind : 'active'}`;
  $('detail-retry').hidden = kind === 'active';
  const facts = [['head', d.head], ['dispatched', d.dispatched], ['pending', d.pending],
                 ['oldest pending', age(d.oldestPendingAgeSeconds)], ['attempts', d.attempts],
                 ['next attempt', d.nextAttemptAt ? `${d.nextAttemptAt} (${until(d.nextAttemptAt)})` : '-'],
                 ['failed at', d.failedAt || '-'], ['pruned through', d.prunedThrough]];
  $('detail-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k),
                                                                   el('dd', { 'data-fact': k }, v)]));
  $('detail-error').textContent = d.lastError || '-';
  $('detail-events').replaceChildren(...d.events.map((e) => el('li',
    { class: e.published ? 'published' : 'unpublished', 'data-offset': e.offset },
    el('div', { class: 'meta' }, el('span', {}, `#${e.offset}`), el('span', { class: 'type' }, e.type),
       el('span', {}, e.createdAt), el('span', {}, e.published ? 'published' : 'not published yet')),
    el('pre', {}, JSON.stringify(e.payload, null, 2)))));
  if (!d.events.length) $('detail-events').replaceChildren(el('li', {}, 'no events kept'));
}

// -- workers and web nodes -------------------------------------------------------------------
function renderNodes(nodes) {
  const now = Date.now() / 1000;
  $('worker-rows').replaceChildren(...nodes.workers.map((w) => el('tr',
    { class: 'worker', 'data-id': w.id },
    el('td', {}, w.id), el('td', {}, w.queue ?? '-'),
    el('td', {}, w.relayThread ? 'alive' : 'stopped'),
    el('td', { class: 'sweep-age' }, w.lastSweepAt ? `${age(w.sweepAgeSeconds)} ago` : 'never'),
    el('td', {}, `${age(Math.max(0, now - w.seenAt))} ago`))));
  $('web-rows').replaceChildren(...nodes.webNodes.map((n) => el('tr',
    { class: 'web-node', 'data-id': n.id },
    el('td', {}, n.id), el('td', { class: 'sockets' }, n.sockets), el('td', {}, n.rooms),
    el('td', {}, n.memberships), el('td', {}, `${age(Math.max(0, now - n.seenAt))} ago`))));
  $('workers-count').textContent = `${nodes.workers.length} alive`;
  $('webs-count').textContent = `${nodes.webNodes.length} alive`;
}

// -- polling and actions ---------------------------------------------------------------------
async function refresh() {
  clearTimeout(state.timer);
  const query = state.filter ? `?q=${encodeURIComponent(state.filter)}` : '';
  // Each part on its own: the database's numbers still show while Redis (the rate, the
  // heartbeats) does not answer, and the other way round.
  const parts = [[`/api/admin/outbox${query}`, renderStatus, 'outbox'],
                 ['/api/admin/outbox/rate', renderRate, 'rate'],
                 ['/api/admin/nodes', renderNodes, 'nodes']];
  const results = await Promise.allSettled(parts.map(([path]) => state.session.api(path)));
  const failures = [];
  for (const [index, result] of results.entries()) {
    const [, render, name] = parts[index];
    if (result.status === 'fulfilled') render(result.value);
    else if ([401, 403].includes(result.reason?.status)) return refuse(result.reason);
    else failures.push(`${name}: ${result.reason?.message}`);
  }
  await refreshDetail();
  state.polls += 1;
  document.body.dataset.polls = String(state.polls);
  $('live').dataset.state = failures.length ? 'error' : 'live';
  $('live').textContent = failures.length ? `not updating ${failures.join('; ')}`
    : `live · updated ${new Date().toLocaleTimeString()}`;
  state.timer = setTimeout(refresh, POLL_MS);
}

async function retry(streams) {
  const body = streams === 'all' ? { all: true } : { streams };
  try {
    const done = await state.session.api('/api/admin/outbox/retry', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const parts = [];
    if (done.retried.length) parts.push(`Retried ${done.retried.length} stream(s): ${done.retried.join(', ')}.`);
    if (done.healthy.length) parts.push(`Already healthy, left unchanged: ${done.healthy.join(', ')}.`);
    notice(parts.join(' ') || 'Nothing to retry.');
    for (const name of done.retried) state.selected.delete(name);
  } catch (error) {
    notice(`Retry failed: ${error.message}`, true);
  }
  await refresh();
}

let filterTimer = null;
function onFilter() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    state.filter = $('filter').value.trim();
    refresh();
  }, 200);
}

// -- signing in --------------------------------------------------------------------------------
function refuse(error) {
  clearTimeout(state.timer);
  $('console').hidden = true;
  $('refused').hidden = false;
  $('refused-reason').textContent = error.status === 403
    ? `The console is for admins; ${state.session.user.email} is a ${state.session.user.role} (${error.message}).`
    : `The token was refused: ${error.message}.`;
  document.body.dataset.refused = 'true';
  document.body.dataset.ready = 'true';
}

function signOut() {
  sessionStorage.removeItem(USER_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  const url = new URL(location.href);
  url.searchParams.delete('user');
  location.assign(url);
}

function claimsOf(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

function showSignin(users) {
  $('signin').hidden = false;
  if (users) {
    const admins = [...users].sort((a, b) => (a.role === 'admin' ? 0 : 1) - (b.role === 'admin' ? 0 : 1));
    $('pick-user').replaceChildren(...admins.map((u) => el('option', { value: u.id },
      `${u.name || u.email} (${u.role})`)));
    $('pick-form').hidden = false;
    $('signin-hint').textContent = users.length ? 'Development: pick an admin.'
      : 'No users yet: run `herald seed` or `herald user add --role admin …`.';
    $('pick-form').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(USER_KEY, $('pick-user').value);
      const url = new URL(location.href);
      url.searchParams.set('user', $('pick-user').value);
      location.assign(url);
    });
  } else {
    $('token-form').hidden = false;
    $('signin-hint').textContent = 'Paste an admin token; it stays in this tab only.';
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
      location.reload();
    });
  }
  document.body.dataset.ready = 'true';
}

async function start() {
  const users = await demoUsers().catch(() => null);
  const userId = Number(params.get('user')) || Number(sessionStorage.getItem(USER_KEY)) || 0;
  if (users) {
    const user = users.find((u) => u.id === userId);
    if (user) state.session = new Session({ user, ttl: 3600, mint: true });
  } else {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const claims = token && claimsOf(token);
    if (claims && claims.exp * 1000 > Date.now()) {
      state.session = new Session({ user: { id: Number(claims.sub), email: claims.email,
                                            name: claims.email, role: claims.role },
                                    ttl: 3600, token, mint: false });
      state.session.onExpired = signOut;
    }
  }
  if (!state.session) return showSignin(users);
  $('who').hidden = false;
  $('who-name').textContent = state.session.user.name || state.session.user.email;
  $('who-role').textContent = state.session.user.role;
  $('switch-user').addEventListener('click', signOut);
  $('refused-switch').addEventListener('click', signOut);
  $('filter').addEventListener('input', onFilter);
  $('retry-selected').addEventListener('click', () => retry([...state.selected]));
  $('retry-all').addEventListener('click', () => retry('all'));
  $('detail-retry').addEventListener('click', () => state.open && retry([state.open]));
  $('detail-close').addEventListener('click', closeDetail);
  $('select-all').addEventListener('change', (e) => {
    for (const s of state.streams) select(s.stream, e.target.checked);
    for (const box of document.querySelectorAll('#stream-rows input.pick')) box.checked = e.target.checked;
  });
  $('console').hidden = false;
  await refresh();
  if (!document.body.dataset.refused) document.body.dataset.ready = 'true';
}

window.heraldOps = state;
start().catch((error) => {
  $('live').dataset.state = 'error';
  $('live').textContent = `could not start: ${error.message}`;
  document.body.dataset.ready = 'true';
});
