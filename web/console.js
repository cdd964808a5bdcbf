// The coapws CoAP console: connect, discover, request, observe, watch the message log, and answer
// the server's requests (role reversal). Built on ./coap.js; no build step, no external URLs.

import { connect, codeString, optionName, parseLinkFormat } from './coap.js';
import {
  CONTENT_FORMATS, encodePayload, optionValueText, parseOptions,
  renderPayload, hex,
} from './console-payload.js';
import { renderTree } from './console-tree.js';

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== undefined && c !== null) e.append(c);
  return e;
}

const CODE_NAMES = {
  '2.01': 'Created', '2.02': 'Deleted', '2.03': 'Valid', '2.04': 'Changed', '2.05': 'Content',
  '2.31': 'Continue', '4.00': 'Bad Request', '4.01': 'Unauthorized', '4.02': 'Bad Option',
  '4.03': 'Forbidden', '4.04': 'Not Found', '4.05': 'Method Not Allowed', '4.06': 'Not Acceptable',
  '4.08': 'Request Entity Incomplete', '4.09': 'Conflict', '4.12': 'Precondition Failed',
  '4.13': 'Request Entity Too Large', '4.15': 'Unsupported Content-Format', '4.22': 'Unprocessable Entity',
  '4.29': 'Too Many Requests', '5.00': 'Internal Server Error', '5.01': 'Not Implemented',
  '5.02': 'Bad Gateway', '5.03': 'Service Unavailable', '5.04': 'Gateway Timeout',
  '5.05': 'Proxying Not Supported',
};

const codeText = (cs) => `${cs}${CODE_NAMES[cs] ? ` ${CODE_NAMES[cs]}` : ''}`;

function clock(d = new Date()) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// ---- state -------------------------------------------------------------------------------------

let conn = null;
let connecting = false;
let observation = null;
const MAX_LOG_ROWS = 2000;
const MAX_NOTIFICATIONS = 300;

function setState(state, text) {
  const s = $('#state');
  s.dataset.state = state;
  s.textContent = text;
  const open = state === 'open';
  for (const id of ['#send', '#discover', '#ask-back', '#observe', '#disconnect', '#ping']) $(id).disabled = !open;
  $('#connect').textContent = open ? 'Reconnect' : 'Connect';
  if (!open) stopObserving('connection closed');
}

function defaultUrl() {
  const param = new URLSearchParams(location.search).get('connect');
  if (param) return param;
  if (location.protocol === 'http:' || location.protocol === 'https:') {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/.well-known/coap`;
  }
  return 'ws://localhost:8683/.well-known/coap';
}

// ---- message log -------------------------------------------------------------------------------

// A message with a payload can be opened in the log to see the payload (text, or hex).
function summaryCell(entry) {
  const payload = entry.message?.payload;
  if (!(payload instanceof Uint8Array) || payload.length === 0) return entry.summary ?? '';
  const head = payload.subarray(0, 1024);
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(head);
    if (/[\x00-\x08\x0e-\x1f]/.test(text)) text = null;
  } catch { text = null; }
  const shown = text ?? hex(head);
  const more = payload.length > head.length ? ` … (${payload.length - head.length} more bytes)` : '';
  return el('details', {}, el('summary', {}, entry.summary ?? ''), el('pre', { class: 'log-payload' }, shown + more));
}

// The library's entry times are ms since its connect began; `base` is that moment's wall clock.
function logEntry(entry, base) {
  const rel = typeof entry.time === 'number' ? entry.time : Date.now() - base;
  const t = new Date(base + rel);
  const bytes = entry.bytes;
  const size = typeof bytes === 'number' ? bytes : bytes?.length ?? '';
  const body = $('#log tbody');
  const row = el('tr', { class: `dir-${entry.direction} kind-${entry.kind}` },
    el('td', { class: 'time' }, clock(t)),
    el('td', { class: 'num' }, rel.toFixed(1)),
    el('td', { class: 'dir', title: entry.direction === 'out' ? 'sent' : 'received' }, entry.direction === 'out' ? '→' : '←'),
    el('td', { class: 'kind' }, entry.kind),
    el('td', { class: 'summary' }, summaryCell(entry)),
    el('td', { class: 'num', title: bytes instanceof Uint8Array ? hex(bytes.subarray(0, 64)) + (bytes.length > 64 ? ' …' : '') : undefined }, String(size)),
    el('td', { class: 'num' }, entry.rtt !== undefined && entry.rtt !== null ? `${Math.round(entry.rtt * 10) / 10} ms` : ''),
  );
  const wrap = $('#log-panel .log-scroll');
  const following = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 40;
  body.append(row);
  while (body.rows.length > MAX_LOG_ROWS) body.deleteRow(0);
  if (following) wrap.scrollTop = wrap.scrollHeight;
}

let logBase = Date.now();

function note(text) {
  logEntry({ direction: 'in', kind: 'console', summary: text }, logBase);
}

// ---- connection --------------------------------------------------------------------------------

async function doConnect() {
  if (connecting) return;
  connecting = true;
  const url = $('#url').value.trim();
  if (conn) {
    const old = conn;
    conn = null;
    try { old.close(); } catch { /* already closed */ }
  }
  setState('connecting', `connecting to ${url} …`);
  $('#csm').textContent = '';
  try {
    const base = Date.now();
    logBase = base;
    const c = await connect(url, { handler: serveRequest, onLog: (e) => logEntry(e, base), timeout: 15000 });
    conn = c;
    const peer = c.peer || {};
    $('#csm').textContent = `peer CSM: Max-Message-Size ${peer.maxMessageSize ?? '?'} bytes, block-wise ${peer.blockWiseTransfer ? 'yes' : 'no'}`;
    $('#csm').dataset.maxMessageSize = String(peer.maxMessageSize ?? '');
    setState('open', `connected to ${url}`);
    c.closed.then((info) => {
      if (conn !== c) return;
      conn = null;
      const why = info ? [info.code, info.reason].filter((x) => x !== undefined && x !== '').join(' ') : '';
      setState('closed', `closed${why ? ` (${why})` : ''}`);
    }, (e) => {
      if (conn !== c) return;
      conn = null;
      setState('error', `connection failed: ${e.message ?? e}`);
    });
    discover();
  } catch (e) {
    const why = String(e.message ?? e);
    setState('error', why.includes(url) ? why : `cannot connect to ${url}: ${why}`);
  } finally {
    connecting = false;
  }
}

// ---- discovery ---------------------------------------------------------------------------------

async function discover() {
  if (!conn) return;
  const tree = $('#tree');
  tree.dataset.state = 'loading';
  try {
    const res = await conn.get('/.well-known/core', { accept: 40 });
    if (!res.ok) {
      tree.replaceChildren(el('p', { class: 'error' }, `/.well-known/core: ${codeText(res.codeString)} ${res.text()}`));
      tree.dataset.state = 'error';
      return;
    }
    const links = parseLinkFormat(res.text());
    tree.replaceChildren(renderTree(links, selectPath));
    tree.dataset.state = 'loaded';
    tree.dataset.count = String(links.length);
  } catch (e) {
    tree.replaceChildren(el('p', { class: 'error' }, `discovery failed: ${e.message ?? e}`));
    tree.dataset.state = 'error';
  }
}

function selectPath(path, attrs) {
  $('#path').value = path;
  for (const b of document.querySelectorAll('#tree .resource')) b.classList.toggle('selected', b.dataset.path === path);
  const obs = attrs.some(([k]) => k === 'obs');
  $('#observe').classList.toggle('suggested', obs);
}

// ---- requests ----------------------------------------------------------------------------------

function splitTarget(text) {
  const t = text.trim() || '/';
  // A full URI goes to the server's proxy in Proxy-Uri.
  if (/^coaps?(\+(ws|tcp))?:\/\//i.test(t) || /^https?:\/\//i.test(t)) return { path: '/', query: [], proxyUri: t };
  const q = t.indexOf('?');
  const path = q < 0 ? t : t.slice(0, q);
  const query = q < 0 ? [] : t.slice(q + 1).split('&').filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  return { path: path.startsWith('/') ? path : `/${path}`, query };
}

function requestOptions() {
  const { path, query, proxyUri } = splitTarget($('#path').value);
  const options = parseOptions($('#options').value);
  if (proxyUri) options.push([35, new TextEncoder().encode(proxyUri)]);
  const opts = { path, query, options };
  const cf = $('#content-format').value;
  const accept = $('#accept').value;
  if (accept !== '') opts.accept = Number(accept);
  const blockSize = $('#block-size').value;
  if (blockSize !== '') opts.blockSize = Number(blockSize);
  return { opts, cf };
}

async function send(ev) {
  ev?.preventDefault();
  if (!conn) return;
  const target = $('#response');
  let request;
  try {
    const { opts, cf } = requestOptions();
    const method = $('#method').value;
    request = { method, ...opts };
    if (method === 'PUT' || method === 'POST' || method === 'FETCH') {
      request.payload = encodePayload($('#payload').value, $('#payload-mode').value);
      if (cf !== '') request.contentFormat = Number(cf);
    }
  } catch (e) {
    showError(target, `cannot send: ${e.message}`);
    return;
  }
  target.dataset.state = 'pending';
  target.replaceChildren(el('p', { class: 'hint' }, `${request.method} ${$('#path').value} …`));
  $('#response-time').textContent = '';
  const started = performance.now();
  try {
    const res = await conn.request(request);
    const ms = performance.now() - started;
    $('#response-time').textContent = `${request.method} ${$('#path').value} · ${ms.toFixed(1)} ms`;
    showResponse(target, res);
  } catch (e) {
    showError(target, `${request.method} ${$('#path').value} failed: ${e.message ?? e}`);
  }
}

function showError(target, text) {
  target.dataset.state = 'error';
  delete target.dataset.code;
  target.replaceChildren(el('p', { class: 'error' }, text));
}

function showResponse(target, res) {
  const cs = res.codeString ?? codeString(res.code);
  target.dataset.state = 'done';
  target.dataset.code = cs;
  const head = el('div', { class: `code code-${cs[0]}` }, codeText(cs));
  const opts = el('table', { class: 'options' });
  for (const [n, v] of res.options || []) {
    opts.append(el('tr', {}, el('th', {}, `${optionName(n) ?? n} (${n})`), el('td', {}, optionValueText(n, v))));
  }
  target.replaceChildren(head, opts, renderPayload(res.payload ?? new Uint8Array(), res.contentFormat));
}

// ---- observe -----------------------------------------------------------------------------------

async function toggleObserve() {
  if (observation) {
    await stopObserving('stopped');
    return;
  }
  if (!conn) return;
  let opts;
  try {
    ({ opts } = requestOptions());
  } catch (e) {
    $('#observe-state').textContent = e.message;
    return;
  }
  const path = $('#path').value.trim() || '/';
  const obs = conn.observe(opts.path, opts);
  const mine = { obs, path, count: 0 };
  observation = mine;
  $('#observe').textContent = 'Stop observing';
  $('#observe').dataset.state = 'observing';
  $('#observe-state').textContent = `observing ${path}`;
  const list = $('#notifications');
  list.replaceChildren();
  try {
    for await (const n of obs) {
      if (observation !== mine) break;
      mine.count += 1;
      const cs = n.codeString ?? codeString(n.code);
      const li = el('li', { class: 'notification', 'data-observe': n.observe ?? '' },
        el('span', { class: 'time' }, clock()),
        el('span', { class: 'obs-seq', title: 'Observe option' }, n.observe !== undefined && n.observe !== null ? `#${n.observe}` : 'final'),
        el('span', { class: `code code-${cs[0]}` }, cs),
        renderPayload(n.payload ?? new Uint8Array(), n.contentFormat),
      );
      list.prepend(li);
      while (list.children.length > MAX_NOTIFICATIONS) list.lastElementChild.remove();
      $('#observe-state').textContent = `observing ${path} · ${mine.count} notification${mine.count === 1 ? '' : 's'}`;
    }
    if (observation === mine) finishObserving(`observation of ${path} ended by the server after ${mine.count}`);
  } catch (e) {
    if (observation === mine) finishObserving(`observation of ${path} failed: ${e.message ?? e}`);
  }
}

function finishObserving(text) {
  observation = null;
  $('#observe').textContent = 'Observe';
  $('#observe').dataset.state = 'stopped';
  $('#observe-state').textContent = text;
}

async function stopObserving(why) {
  const mine = observation;
  if (!mine) return;
  finishObserving(`${why}: ${mine.path} after ${mine.count} notification${mine.count === 1 ? '' : 's'}`);
  try {
    await mine.obs.cancel();
  } catch (e) {
    $('#observe-state').textContent += ` (deregistration: ${e.message ?? e})`;
  }
}

// ---- role reversal -----------------------------------------------------------------------------

async function serveRequest(req) {
  let reply;
  if (req.path === '/whoami' && req.method === 'GET') {
    reply = { code: '2.05', payload: new TextEncoder().encode($('#whoami').value), contentFormat: 0 };
  } else if (req.path === '/whoami' && req.method === 'PUT') {
    $('#whoami').value = req.text();
    reply = { code: '2.04' };
  } else if (req.path === '/.well-known/core' && req.method === 'GET') {
    reply = { code: '2.05', payload: new TextEncoder().encode('</whoami>;ct=0;title="This browser page"'), contentFormat: 40 };
  } else if (req.path === '/whoami' || req.path === '/.well-known/core') {
    reply = { code: '4.05' };
  } else {
    reply = { code: '4.04', payload: new TextEncoder().encode(`this page serves /whoami, not ${req.path}`), contentFormat: 0 };
  }
  const served = $('#served');
  served.append(el('li', { 'data-path': req.path, 'data-code': reply.code },
    el('span', { class: 'time' }, clock()), ` ${req.method} ${req.path}${req.query?.length ? `?${req.query.join('&')}` : ''} → `,
    el('span', { class: `code code-${reply.code[0]}` }, codeText(reply.code))));
  while (served.children.length > 100) served.firstElementChild.remove();
  return reply;
}

async function askBack() {
  if (!conn) return;
  const out = $('#ask-back-result');
  out.dataset.state = 'pending';
  const asked = $('#ask-back-path').value.trim() || '/whoami';
  const query = asked === '/whoami' ? [] : [`path=${asked}`];
  out.textContent = `GET /ask-back${query.length ? `?${query[0]}` : ''} …`;
  try {
    const res = await conn.get('/ask-back', { query });
    out.dataset.state = res.ok ? 'done' : 'error';
    out.dataset.code = res.codeString;
    out.replaceChildren(el('span', { class: `code code-${res.codeString[0]}` }, codeText(res.codeString)), ' ', el('q', {}, res.text()));
  } catch (e) {
    out.dataset.state = 'error';
    out.textContent = `GET /ask-back failed: ${e.message ?? e}`;
  }
}

// ---- wiring ------------------------------------------------------------------------------------

function fillFormats(select) {
  for (const [n, name] of CONTENT_FORMATS) select.append(el('option', { value: String(n) }, `${n} ${name}`));
}

function init() {
  fillFormats($('#content-format'));
  fillFormats($('#accept'));
  $('#url').value = defaultUrl();
  $('#whoami').value = `coapws console in ${navigator.userAgent}`;
  $('#connect-form').addEventListener('submit', (ev) => { ev.preventDefault(); doConnect(); });
  $('#disconnect').addEventListener('click', async () => {
    const c = conn;
    if (!c) return;
    try { await c.release(); } catch (e) { note(`release: ${e.message ?? e}`); }
  });
  $('#ping').addEventListener('click', async () => {
    if (!conn) return;
    try { note(`ping: pong after ${(await conn.ping()).toFixed(1)} ms`); } catch (e) { note(`ping failed: ${e.message ?? e}`); }
  });
  $('#discover').addEventListener('click', discover);
  $('#request-form').addEventListener('submit', send);
  $('#observe').addEventListener('click', toggleObserve);
  $('#ask-back').addEventListener('click', askBack);
  $('#clear-log').addEventListener('click', () => { $('#log tbody').replaceChildren(); });
  setState('idle', 'not connected');
  if (location.protocol === 'http:' || location.protocol === 'https:' || new URLSearchParams(location.search).has('connect')) {
    doConnect();
  }
}

init();
