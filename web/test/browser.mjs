// The console in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) loads the console from a live `coapws serve` (same origin as its
// /.well-known/coap), discovers the demo site, GETs, PUTs, POSTs, observes /time, answers the
// server's GET /whoami (role reversal through /ask-back), and saves a screenshot; then a second
// server, `coapws serve DIR --write`, takes a block-wise PUT from the console onto disk.
//
// Run by scripts/test-browser.sh, which installs Chromium and playwright-core (under
// target/browser-npm). Environment: COAPWS_BIN (default target/debug/coapws), CHROMIUM (default
// /usr/bin/chromium), BROWSER_NPM_DIR (default target/browser-npm), COAPWS_SITE (development:
// serve the console from that folder instead of the binary's embedded copy). Ends with
// `browser: N passed, M failed` and exits non-zero on any failure.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(repo, process.env.COAPWS_BIN || 'target/debug/coapws');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const NPM_DIR = path.resolve(repo, process.env.BROWSER_NPM_DIR || 'target/browser-npm');
const OUT_DIR = path.join(repo, 'target/browser');
const SCREENSHOT = path.join(OUT_DIR, 'console.png');
// Development only: serve the console from this folder (`--site`) instead of the files embedded
// in the binary, so a change to web/ is tried without a rebuild.
const SITE = process.env.COAPWS_SITE ? path.resolve(repo, process.env.COAPWS_SITE) : null;
const WAIT = 10_000; // every single wait in the browser
const OVERALL = 150_000; // the whole run

const started = Date.now();
const results = [];
const children = [];
let browser = null;
const tempDirs = [];

function record(name, ok, detail = '') {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
}

/** Runs one named check; a thrown error fails it (and the run goes on with the next). */
async function check(name, fn) {
  try {
    const detail = await fn();
    record(name, true, typeof detail === 'string' ? detail : '');
    return true;
  } catch (e) {
    record(name, false, String(e?.message ?? e).split('\n')[0]);
    return false;
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function cleanup() {
  if (browser) {
    const b = browser;
    browser = null;
    await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}

function finish() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log('');
  console.log(`summary (${((Date.now() - started) / 1000).toFixed(1)} s):`);
  for (const r of results) console.log(`  ${r.ok ? 'passed' : 'FAILED'}  ${r.name}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

const watchdog = setTimeout(async () => {
  record(`the run finishes within ${OVERALL / 1000} s`, false, 'watchdog fired');
  await cleanup();
  process.exit(finish() || 1);
}, OVERALL);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    record('the run is not interrupted', false, sig);
    await cleanup();
    process.exit(1);
  });
}

/** Starts `coapws serve ARGS --ws 127.0.0.1:0` and resolves with its port. */
function startServer(args, label) {
  return new Promise((resolve, reject) => {
    const site = SITE ? ['--site', SITE] : [];
    const child = spawn(BIN, ['serve', ...args, ...site, '--ws', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    children.push(child);
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${label}: no "listening on coap+ws://" line within 10 s; stderr: ${err.slice(-400)}`)), 10_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on coap\+ws:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[1]), child, stderr: () => err });
      }
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`${label}: cannot start ${BIN}: ${e.message}`)); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${label}: exited (${code ?? signal}) before listening; stderr: ${err.slice(-400)}`));
    });
  });
}

async function openConsole(context, base, label) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console error: ${m.text()}`); });
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  await page.goto(base, { waitUntil: 'load', timeout: WAIT });
  page.consoleErrors = errors;
  page.label = label;
  return page;
}

async function waitConnected(page) {
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT }).catch(async (e) => {
    const state = await page.textContent('#state').catch(() => '?');
    throw new Error(`#state is "${state}", not connected (${e.message.split('\n')[0]})`);
  });
}

/** Fills the request panel and sends; resolves with the response panel's code and text. */
async function sendRequest(page, { method, path: target, contentFormat = '', accept = '', payload = '', payloadMode = 'text', blockSize = '', options = '' }) {
  await page.selectOption('#method', method);
  await page.selectOption('#block-size', blockSize);
  await page.selectOption('#payload-mode', payloadMode);
  await page.fill('#path', target);
  await page.selectOption('#content-format', contentFormat);
  await page.selectOption('#accept', accept);
  await page.fill('#options', options);
  await page.fill('#payload', payload);
  // The previous response is marked so a stale one is never read as this one's.
  await page.$eval('#response', (e) => { e.dataset.state = 'stale'; delete e.dataset.code; });
  await page.click('#send');
  await page.waitForSelector('#response[data-state="done"], #response[data-state="error"]', { timeout: WAIT });
  return page.$eval('#response', (e) => ({
    state: e.dataset.state,
    code: e.dataset.code,
    text: e.innerText,
    decoded: e.querySelector('.payload-view')?.dataset.decoded,
  }));
}

async function main() {
  mkdirSync(OUT_DIR, { recursive: true });
  rmSync(SCREENSHOT, { force: true });

  const prereqs = await check('Chromium, playwright-core and the coapws binary are present', () => {
    assert(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/test-browser.sh installs Debian's chromium)`);
    assert(existsSync(path.join(NPM_DIR, 'node_modules/playwright-core/package.json')), `playwright-core is missing under ${NPM_DIR}`);
    assert(existsSync(BIN), `${BIN} is missing (cargo build first, or set COAPWS_BIN)`);
    return `${CHROMIUM}, ${BIN}`;
  });
  if (!prereqs) return;
  const { chromium } = createRequire(path.join(NPM_DIR, 'package.json'))('playwright-core');

  let demo;
  if (!(await check('coapws serve (demo site) starts', async () => {
    demo = await startServer([], 'demo server');
    return `port ${demo.port}`;
  }))) return;
  const base = `http://127.0.0.1:${demo.port}/`;

  await check('GET / over HTTP on the WebSocket port is the console (text/html)', async () => {
    const res = await fetch(base, { signal: AbortSignal.timeout(WAIT) });
    assert(res.status === 200, `status ${res.status}`);
    const type = res.headers.get('content-type') || '';
    assert(type.startsWith('text/html'), `content-type ${type}`);
    const body = await res.text();
    assert(body.includes('console.js'), 'the page does not load console.js');
    for (const asset of ['console.js', 'coap.js', 'console.css']) {
      const a = await fetch(new URL(asset, base), { signal: AbortSignal.timeout(WAIT) });
      assert(a.status === 200, `${asset}: status ${a.status}`);
    }
    return type;
  });

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 1000 } });
  // Loopback only: anything else the page asks for is refused and fails the run.
  const offsite = [];
  await context.route(/.*/, (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === '127.0.0.1' || u.hostname === 'localhost') return route.continue();
    offsite.push(u.href);
    return route.abort();
  });

  const page = await openConsole(context, base, 'demo');

  await check('the console connects to its own origin and shows the peer CSM', async () => {
    await waitConnected(page);
    const url = await page.inputValue('#url');
    assert(url === `ws://127.0.0.1:${demo.port}/.well-known/coap`, `connect box holds ${url}`);
    const csm = await page.textContent('#csm');
    assert(/Max-Message-Size \d+ bytes/.test(csm), `CSM shown as "${csm}"`);
    return csm;
  });

  await check('discovery shows the demo resources (/hello, /echo, /time, /ask-back) with attributes', async () => {
    await page.waitForSelector('#tree[data-state="loaded"]', { timeout: WAIT });
    const paths = await page.$$eval('#tree .resource', (bs) => bs.map((b) => b.dataset.path));
    for (const p of ['/hello', '/echo', '/time', '/ask-back']) assert(paths.includes(p), `${p} missing from the tree (${paths.join(' ')})`);
    const hello = await page.$eval('#tree .resource[data-path="/hello"]', (b) => b.parentElement.innerText);
    assert(hello.includes('ct=0') && hello.includes('Greeting'), `/hello's entry shows "${hello}"`);
    const time = await page.$eval('#tree .resource[data-path="/time"]', (b) => b.parentElement.innerText);
    assert(/\bobs\b/.test(time), `/time's entry shows "${time}", without obs`);
    return paths.join(' ');
  });

  await check('clicking /hello in the tree selects it, and GET shows "Hello, CoAP over WebSockets!"', async () => {
    await page.click('#tree .resource[data-path="/hello"]');
    assert((await page.inputValue('#path')) === '/hello', 'the path field does not hold /hello');
    await page.selectOption('#method', 'GET');
    await page.$eval('#response', (e) => { e.dataset.state = 'stale'; });
    await page.click('#send');
    await page.waitForSelector('#response[data-state="done"], #response[data-state="error"]');
    const r = await page.$eval('#response', (e) => ({ code: e.dataset.code, text: e.innerText, decoded: e.querySelector('.payload-view')?.dataset.decoded }));
    assert(r.code === '2.05', `code ${r.code}: ${r.text}`);
    assert(r.text.includes('Hello, CoAP over WebSockets!'), `response shows "${r.text}"`);
    assert(r.decoded === 'text', `payload decoded as ${r.decoded}`);
    return `${r.code}, decoded as ${r.decoded}`;
  });

  await check('PUT /hello (the demo site has no PUT) shows 4.05 Method Not Allowed', async () => {
    const r = await sendRequest(page, { method: 'PUT', path: '/hello', contentFormat: '0', payload: 'nope' });
    assert(r.code === '4.05', `code ${r.code}: ${r.text}`);
    assert(r.text.includes('Method Not Allowed'), `response shows "${r.text}"`);
    return r.code;
  });

  await check('POST JSON to /echo comes back 2.04 and pretty-printed', async () => {
    const r = await sendRequest(page, { method: 'POST', path: '/echo', contentFormat: '50', payload: '{"a":[1,2],"b":"x"}' });
    assert(r.code === '2.04', `code ${r.code}: ${r.text}`);
    assert(r.decoded === 'JSON', `payload decoded as ${r.decoded}`);
    assert(r.text.includes('"a": [\n    1,\n    2\n  ],'), `payload shown as ${JSON.stringify(r.text)}`);
    return r.code;
  });

  await check('POST CBOR (typed as hex) to /echo is shown in diagnostic notation', async () => {
    // {"n": 1.5, "v": [_ h'0102', true]}
    const r = await sendRequest(page, { method: 'POST', path: '/echo', contentFormat: '60', payloadMode: 'hex', payload: 'a2 61 6e f9 3e 00 61 76 9f 42 01 02 f5 ff' });
    assert(r.code === '2.04', `code ${r.code}: ${r.text}`);
    assert(r.decoded === 'CBOR diagnostic notation', `payload decoded as ${r.decoded}`);
    assert(r.text.includes(`{"n": 1.5, "v": [_ h'0102', true]}`), `payload shown as ${JSON.stringify(r.text)}`);
    return r.code;
  });

  await check('observing /time shows at least two notifications, and stopping ends it', async () => {
    await page.click('#tree .resource[data-path="/time"]');
    assert((await page.inputValue('#path')) === '/time', 'the path field does not hold /time');
    await page.click('#observe');
    await page.waitForFunction(() => document.querySelectorAll('#notifications .notification').length >= 2, null, { timeout: 8000 });
    const items = await page.$$eval('#notifications .notification', (ls) => ls.map((l) => ({ obs: l.dataset.observe, text: l.innerText })));
    const times = items.map((i) => (i.text.match(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/) || [''])[0]);
    assert(times.every(Boolean), `a notification without a time: ${JSON.stringify(items)}`);
    assert(new Set(times).size === times.length, `repeated times: ${times.join(' ')}`);
    assert(items.every((i) => i.obs !== ''), 'a notification without an Observe value');
    await page.click('#observe');
    await page.waitForSelector('#observe[data-state="stopped"]');
    const state = await page.textContent('#observe-state');
    assert(/^stopped/.test(state), `observe state "${state}"`);
    return `${items.length} notifications (${times.join(', ')})`;
  });

  await check('ask-back: the server GETs /whoami from the page and returns the page\'s answer', async () => {
    const token = `console check ${Math.random().toString(36).slice(2)}`;
    await page.fill('#whoami', token);
    await page.click('#ask-back');
    await page.waitForSelector('#ask-back-result[data-state="done"], #ask-back-result[data-state="error"]');
    const r = await page.$eval('#ask-back-result', (e) => ({ code: e.dataset.code, text: e.innerText }));
    assert(r.code === '2.05', `code ${r.code}: ${r.text}`);
    assert(r.text.includes(token), `ask-back shows "${r.text}", not "${token}"`);
    const served = await page.$$eval('#served li', (ls) => ls.map((l) => `${l.dataset.path} ${l.dataset.code}`));
    assert(served.includes('/whoami 2.05'), `requests served: ${served.join(', ') || 'none'}`);
    return r.text;
  });

  await check('ask-back for a path the page does not serve: the page answers 4.04 and the server says so', async () => {
    await page.fill('#ask-back-path', '/not-here');
    await page.$eval('#ask-back-result', (e) => { e.dataset.state = 'stale'; });
    await page.click('#ask-back');
    await page.waitForSelector('#ask-back-result[data-state="done"], #ask-back-result[data-state="error"]');
    const r = await page.$eval('#ask-back-result', (e) => ({ code: e.dataset.code, text: e.innerText }));
    // The demo site reports the page's answer in its own response (its code has varied: 5.02, 2.05).
    assert(r.code === '2.05' || r.code === '5.02', `code ${r.code}: ${r.text}`);
    assert(r.text.includes('/not-here') && r.text.includes('4.04'), `ask-back shows "${r.text}"`);
    const served = await page.$$eval('#served li', (ls) => ls.map((l) => `${l.dataset.path} ${l.dataset.code}`));
    assert(served.includes('/not-here 4.04'), `requests served: ${served.join(', ')}`);
    await page.fill('#ask-back-path', '/whoami');
    return r.text;
  });

  await check('the message log shows messages both ways with sizes and round-trip times', async () => {
    const rows = await page.$$eval('#log tbody tr', (trs) => trs.map((t) => ({ cls: t.className, cells: [...t.cells].map((c) => c.innerText) })));
    const out = rows.filter((r) => r.cls.includes('dir-out'));
    const inn = rows.filter((r) => r.cls.includes('dir-in'));
    assert(out.length >= 5 && inn.length >= 5, `${out.length} out, ${inn.length} in`);
    assert(rows.some((r) => r.cls.includes('kind-signal')), 'no signalling message (CSM) in the log');
    assert(rows.some((r) => r.cls.includes('kind-request') && r.cls.includes('dir-in')), 'the server\'s request to the page is not in the log');
    assert(rows.some((r) => r.cells[4].includes('/hello')), 'the GET of /hello is not in the log');
    assert(rows.some((r) => /ms$/.test(r.cells[6])), 'no round-trip time in the log');
    assert(rows.every((r) => /^\d\d:\d\d:\d\d\.\d{3}$/.test(r.cells[0])), 'a row without a time');
    // A response with a payload opens to show it.
    const summaries = page.locator('#log tbody tr.dir-in.kind-response details > summary');
    const n = await summaries.count();
    let opened = null;
    for (let i = 0; i < n && !opened; i++) {
      await summaries.nth(i).click();
      const shown = await summaries.nth(i).locator('xpath=..').locator('pre').innerText();
      if (shown.includes('Hello, CoAP over WebSockets!')) opened = shown;
    }
    assert(opened, `none of ${n} responses with a payload opens to show /hello's`);
    return `${rows.length} rows`;
  });

  await check(`screenshot saved to ${path.relative(repo, SCREENSHOT)}`, async () => {
    await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: WAIT });
    const size = statSync(SCREENSHOT).size;
    assert(size > 10_000, `only ${size} bytes`);
    return `${size} bytes`;
  });

  await check('Ping, Release, then reconnect through the connect box with a coap+ws:// URI', async () => {
    await page.click('#ping');
    await page.waitForFunction(() => [...document.querySelectorAll('#log tbody tr')].some((t) => /pong after/.test(t.innerText)), null, { timeout: WAIT });
    await page.click('#disconnect');
    await page.waitForSelector('#state[data-state="closed"]', { timeout: WAIT });
    assert(await page.isDisabled('#send'), 'Send is enabled on a closed connection');
    const uri = `coap+ws://127.0.0.1:${demo.port}/.well-known/coap`;
    await page.fill('#url', uri);
    await page.$eval('#tree', (t) => { t.dataset.state = 'stale'; });
    await page.click('#connect');
    await waitConnected(page);
    await page.waitForSelector('#tree[data-state="loaded"]', { timeout: WAIT });
    const r = await sendRequest(page, { method: 'GET', path: '/hello' });
    assert(r.code === '2.05', `GET after reconnecting: ${r.code}`);
    return uri;
  });

  await check('the console\'s CBOR decoder renders RFC 8949 appendix A examples in the browser', async () => {
    const bad = await page.evaluate(async () => {
      const { cborToDiagnostic } = await import('./console-cbor.js');
      const vectors = [
        ['00', '0'], ['1864', '100'], ['1bffffffffffffffff', '18446744073709551615'],
        ['c249010000000000000000', "2(h'010000000000000000')"], ['3903e7', '-1000'],
        ['3bffffffffffffffff', '-18446744073709551616'], ['f90000', '0.0'], ['f98000', '-0.0'],
        ['f93e00', '1.5'], ['f97bff', '65504.0'], ['fa47c35000', '100000.0'],
        ['fb7e37e43c8800759c', '1e+300'], ['f90400', '0.00006103515625'], ['f9c400', '-4.0'],
        ['f97c00', 'Infinity'], ['f97e00', 'NaN'], ['fbfff0000000000000', '-Infinity'],
        ['f4', 'false'], ['f5', 'true'], ['f6', 'null'], ['f7', 'undefined'], ['f0', 'simple(16)'],
        ['f8ff', 'simple(255)'], ['d74401020304', "23(h'01020304')"], ['40', "h''"], ['60', '""'],
        ['62225c', '"\\"\\\\"'], ['62c3bc', '"\u00fc"'], ['80', '[]'], ['8301820203820405', '[1, [2, 3], [4, 5]]'],
        ['a26161016162820203', '{"a": 1, "b": [2, 3]}'], ['5f42010243030405ff', "(_ h'0102', h'030405')"],
        ['7f657374726561646d696e67ff', '(_ "strea", "ming")'], ['9fff', '[_ ]'],
        ['bf6346756ef563416d7421ff', '{_ "Fun": true, "Amt": -2}'],
      ];
      const hex = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
      const out = [];
      for (const [h, want] of vectors) {
        let got;
        try { got = cborToDiagnostic(hex(h)); } catch (e) { got = `error: ${e.message}`; }
        if (got !== want) out.push(`${h}: ${got} (want ${want})`);
      }
      for (const h of ['18', '5f01ff', 'ff', '1c', '62c3']) {
        try { out.push(`${h}: decoded as ${cborToDiagnostic(hex(h))}, not refused`); } catch { /* refused, right */ }
      }
      return out;
    });
    assert(bad.length === 0, bad.join('; '));
  });

  await check('the resource tree nests paths, keeps folders apart from resources, and groups other servers', async () => {
    const r = await page.evaluate(async () => {
      const { parseLinkFormat } = await import('./coap.js');
      const { renderTree } = await import('./console-tree.js');
      const links = parseLinkFormat('</sensors/temp>;rt="temperature";if=sensor;obs;ct="0 60",</sensors/hum>;rt=humidity,'
        + '</a/b/c>;title="Deep",</>;ct=40,<coap://other.example/x/y>;rt=remote');
      const picked = [];
      const ul = renderTree(links, (path, attrs) => picked.push([path, attrs.map(([k]) => k).join(' ')]));
      const box = document.createElement('div');
      box.append(ul);
      document.body.append(box);
      const buttons = [...box.querySelectorAll('.resource')].map((b) => b.dataset.path);
      const folders = [...box.querySelectorAll('.folder')].map((f) => f.textContent);
      const temp = box.querySelector('.resource[data-path="/sensors/temp"]');
      const depth = (e) => { let d = 0; for (let x = e; x !== box; x = x.parentElement) if (x.tagName === 'UL') d++; return d; };
      temp.click();
      box.querySelector('.resource[data-path="coap://other.example/x/y"]').click();
      const attrs = temp.parentElement.innerText;
      const ctTitle = temp.parentElement.querySelector('.attr-ct')?.title;
      const out = { buttons, folders, depth: depth(temp), deep: depth(box.querySelector('.resource[data-path="/a/b/c"]')), picked, attrs, ctTitle };
      box.remove();
      return out;
    });
    const want = ['/', '/a/b/c', '/sensors/hum', '/sensors/temp', 'coap://other.example/x/y'];
    assert(JSON.stringify([...r.buttons].sort()) === JSON.stringify(want), `resources ${r.buttons.join(' ')}`);
    assert(r.folders.includes('/sensors') && r.folders.includes('/a') && r.folders.includes('/b') && r.folders.includes('coap://other.example'), `folders ${r.folders.join(' ')}`);
    assert(r.depth === 2 && r.deep === 3, `depths ${r.depth}, ${r.deep}`);
    assert(/rt=temperature/.test(r.attrs) && /if=sensor/.test(r.attrs) && /\bobs\b/.test(r.attrs), `attributes "${r.attrs}"`);
    assert(r.ctTitle === 'text/plain; charset=utf-8, application/cbor', `ct title "${r.ctTitle}"`);
    assert(JSON.stringify(r.picked) === JSON.stringify([['/sensors/temp', 'rt if obs ct'], ['coap://other.example/x/y', 'rt']]), `selected ${JSON.stringify(r.picked)}`);
    return `${r.buttons.length} resources, ${r.folders.length} folders`;
  });

  await check('no errors in the page', async () => {
    assert(page.consoleErrors.length === 0, page.consoleErrors.join('; '));
  });

  // A file server that takes writes: the PUT's bytes must land on disk.
  const root = mkdtempSync(path.join(tmpdir(), 'coapws-browser-'));
  tempDirs.push(root);
  let files;
  if (!(await check('coapws serve DIR --write starts', async () => {
    files = await startServer([root, '--write'], 'file server');
    return `port ${files.port}`;
  }))) return;
  const filesPage = await openConsole(context, `http://127.0.0.1:${files.port}/`, 'files');
  await check('a block-wise PUT from the console lands on disk byte for byte, and GET reads it back', async () => {
    await waitConnected(filesPage);
    // Block size 1024 chosen in the console: the library sends the 5 KB in Block1 pieces.
    const line = `written by Chromium through the coapws console ${Date.now()}\n`;
    const body = line.repeat(Math.ceil(5000 / line.length));
    const put = await sendRequest(filesPage, { method: 'PUT', path: '/from-browser.txt', contentFormat: '0', payload: body, blockSize: '1024' });
    assert(put.code === '2.01' || put.code === '2.04', `PUT: ${put.code}: ${put.text.slice(0, 200)}`);
    const file = path.join(root, 'from-browser.txt');
    assert(existsSync(file), `${file} does not exist`);
    const disk = readFileSync(file, 'utf8');
    assert(disk === body, `${disk.length} bytes on disk, ${body.length} sent`);
    const puts = await filesPage.$$eval('#log tbody tr.dir-out', (trs) => trs.filter((t) => /^PUT .*Block1/.test(t.cells[4].innerText)).length);
    assert(puts === Math.ceil(body.length / 1024), `${puts} PUT messages with Block1 in the log for ${body.length} bytes`);
    const get = await sendRequest(filesPage, { method: 'GET', path: '/from-browser.txt', blockSize: '512' });
    assert(get.code === '2.05', `GET: ${get.code}`);
    assert(get.text.includes(`${body.length} bytes`), `GET does not show all ${body.length} bytes`);
    assert(get.text.includes(line.trim()), 'GET does not show the file');
    const gets = await filesPage.$$eval('#log tbody tr.dir-out', (trs) => trs.filter((t) => /^GET \/from-browser.txt.*Block2/.test(t.cells[4].innerText)).length);
    assert(gets === Math.ceil(body.length / 512), `${gets} GET messages with Block2 in the log for ${body.length} bytes`);
    return `PUT ${put.code}, ${body.length} bytes in ${puts} Block1 messages, back in ${gets} Block2 GETs`;
  });
  await check('extra options reach the server: PUT with If-None-Match on an existing file gets 4.12', async () => {
    const file = path.join(root, 'from-browser.txt');
    const before = readFileSync(file);
    const r = await sendRequest(filesPage, { method: 'PUT', path: '/from-browser.txt', contentFormat: '0', payload: 'overwritten', options: 'If-None-Match=' });
    assert(r.code === '4.12', `PUT with If-None-Match: ${r.code}`);
    assert(readFileSync(file).equals(before), 'the file changed');
    const log = await filesPage.$$eval('#log tbody tr.dir-out', (trs) => trs.map((t) => t.cells[4].innerText).filter((x) => /^PUT/.test(x)).pop());
    assert(/If-None-Match/.test(log), `the last PUT in the log: ${log}`);
    return r.code;
  });

  await check('GET /.well-known/core in the request panel is shown as a link list', async () => {
    const r = await sendRequest(filesPage, { method: 'GET', path: '/.well-known/core', accept: '40' });
    assert(r.code === '2.05', `code ${r.code}`);
    assert(/^link-format, \d+ links?$/.test(r.decoded), `payload decoded as ${r.decoded}`);
    const items = await filesPage.$$eval('#response .payload-links li', (ls) => ls.map((l) => l.innerText));
    assert(items.length >= 1 && items.every((i) => i.startsWith('<')), `links: ${items.join(' | ')}`);
    return items.join(' | ');
  });

  await check('no errors in the file server\'s page', async () => {
    assert(filesPage.consoleErrors.length === 0, filesPage.consoleErrors.join('; '));
  });
  await check('the page asked for nothing off loopback', async () => {
    assert(offsite.length === 0, offsite.join(' '));
  });
}

let code = 1;
try {
  await main();
} catch (e) {
  record('the run completes', false, String(e?.stack ?? e).split('\n').slice(0, 3).join(' | '));
} finally {
  clearTimeout(watchdog);
  await cleanup();
  code = finish();
}
process.exit(code);
