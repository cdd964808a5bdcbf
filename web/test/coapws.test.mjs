// End to end: web/coap.js in node against a live `coapws serve` (demo site and file server).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, CoapError, Code, Option, ContentFormat, decodeBlock, parseLinkFormat, toHex } from '../coap.js';
import { startCoapws, webSocket } from './servers.mjs';

let demo, files, dir;
const WebSocket = webSocket();
const open = (url, opts = {}) => connect(url, { WebSocket, timeout: 10000, ...opts });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coapws-web-'));
  demo = await startCoapws([]);
  files = await startCoapws([dir, '--write']);
});

after(async () => {
  await demo?.stop();
  await files?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('CSM exchange: ours goes first with our limits, the peer\'s settings are read', async () => {
  const log = [];
  const c = await open(demo.url, { maxMessageSize: 4096, onLog: (e) => log.push(e) });
  assert.equal(log[0].direction, 'out');
  assert.equal(log[0].summary, '7.01 CSM token - Max-Message-Size:4096 Block-Wise-Transfer');
  const theirs = log.find((e) => e.direction === 'in');
  assert.equal(theirs.kind, 'signal');
  assert.match(theirs.summary, /^7\.01 CSM token - Max-Message-Size:\d+/);
  assert.ok(c.peer.maxMessageSize > 1152, `peer max message size ${c.peer.maxMessageSize}`);
  assert.equal(c.peer.blockWiseTransfer, theirs.summary.includes('Block-Wise-Transfer'));
  assert.equal(String(c.peer.maxMessageSize), /Max-Message-Size:(\d+)/.exec(theirs.summary)[1]);
  c.close();
  await c.closed;
});

test('close: the server answers our Close frame, so the WebSocket closes cleanly (1000), RFC 6455 §5.5.1', async () => {
  const c = await open(demo.url);
  await c.ping();
  c.close();
  const closed = await c.closed;
  assert.equal(closed.code, 1000, `closed with ${closed.code} (1006: the server dropped the connection without its Close frame)`);
});

test('connect fails with CoapError when nothing listens', async () => {
  const dead = await startCoapws([]);
  await dead.stop();
  await assert.rejects(open(dead.url, { timeout: 3000 }), CoapError);
});

test('GET /hello, POST /echo, 4.04, discovery', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  const hello = await c.get('/hello');
  assert.equal(hello.code, 69);
  assert.equal(hello.codeString, '2.05');
  assert.equal(hello.ok, true);
  assert.equal(hello.contentFormat, ContentFormat.TEXT);
  assert.equal(hello.text(), 'Hello, CoAP over WebSockets!');
  const res = log.find((e) => e.direction === 'in' && e.kind === 'response');
  assert.equal(typeof res.rtt, 'number');
  assert.match(log.find((e) => e.direction === 'out' && e.kind === 'request').summary, /^GET \/hello token [0-9a-f]+$/);

  const text = 'Grüße, 🌍';
  const echo = await c.post('/echo', text, { contentFormat: ContentFormat.TEXT });
  assert.equal(echo.ok, true);
  assert.equal(echo.text(), text);
  const bin = randomBytes(300);
  const echoBin = await c.request({ method: 'POST', path: '/echo', payload: bin });
  assert.deepEqual(Buffer.from(echoBin.payload), bin);

  const missing = await c.get('/no/such/thing');
  assert.equal(missing.codeString, '4.04');
  assert.equal(missing.ok, false);

  const wk = await c.get('/.well-known/core');
  assert.equal(wk.contentFormat, ContentFormat.LINK_FORMAT);
  const links = parseLinkFormat(wk.text());
  const time = links.find((l) => l.target === '/time');
  assert.equal(time.params.obs, true);
  assert.ok(links.some((l) => l.target === '/hello'));
  c.close();
});

test('tokens are unique per connection, concurrent requests are matched by token', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  const payloads = Array.from({ length: 20 }, (_, i) => `message ${i}`);
  const answers = await Promise.all(payloads.map((p) => c.post('/echo', p)));
  assert.deepEqual(answers.map((a) => a.text()), payloads);
  const tokens = log.filter((e) => e.direction === 'out' && e.kind === 'request').map((e) => toHex(e.message.token));
  assert.equal(new Set(tokens).size, 20);
  c.close();
});

test('ping: 7.02 answered by 7.03 with the same token', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  const rtts = await Promise.all([c.ping(), c.ping(), c.ping()]);
  for (const rtt of rtts) assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`);
  const pings = log.filter((e) => e.summary.startsWith('7.02')).map((e) => toHex(e.message.token));
  const pongs = log.filter((e) => e.summary.startsWith('7.03')).map((e) => toHex(e.message.token));
  assert.equal(pings.length, 3);
  assert.deepEqual([...pongs].sort(), [...pings].sort());
  c.close();
});

test('observe /time: three notifications, then cancel; the server goes on working', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  const obs = c.observe('/time');
  const seen = [];
  for await (const n of obs) {
    assert.equal(n.ok, true);
    assert.equal(typeof n.observe, 'number');
    seen.push(n);
    if (seen.length === 4) break; // registration response + 3 notifications; break deregisters
  }
  const texts = seen.map((n) => n.text());
  assert.equal(new Set(texts).size, 4, `distinct times: ${texts}`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].observe > seen[i - 1].observe, 'Observe grows');
  const token = toHex(obs.token);
  const dereg = log.find((e) => e.direction === 'out' && toHex(e.message.token) === token && e.summary.includes('Observe:1'));
  assert.ok(dereg, 'break sent GET Observe=1 on the same token');
  assert.match(dereg.summary, /^GET \/time token [0-9a-f]+ Observe:1$/);

  // explicit cancel on a second observation resolves to the server's answer
  const obs2 = c.observe('/time');
  const first = await obs2.first;
  assert.equal(first.ok, true);
  const answer = await obs2.cancel();
  assert.equal(answer.ok, true, `${answer.codeString} ${answer.text()}`);
  assert.equal(answer.observe, undefined, 'deregistration is answered without Observe');
  assert.equal((await obs2.next()).done, true);

  // nothing more arrives on either token, and the server still answers
  const before = log.length;
  await sleep(2200);
  const late = log.slice(before).filter((e) => e.direction === 'in' && [token, toHex(obs2.token)].includes(toHex(e.message.token)));
  assert.deepEqual(late.map((e) => e.summary), []);
  assert.equal((await c.get('/hello')).ok, true);
  const obs3 = c.observe('/time');
  assert.equal((await obs3.next()).value.ok, true);
  await obs3.cancel();
  c.close();
});

test('an observation ends when the connection closes', async () => {
  const c = await open(demo.url);
  const obs = c.observe('/time');
  assert.equal((await obs.next()).done, false);
  c.close();
  const r = await Promise.race([obs.next(), sleep(5000).then(() => 'hang')]);
  assert.deepEqual(r, { done: true, value: undefined });
});

test('role reversal: the server GETs /whoami from us; serve() sets and replaces the handler', async () => {
  const c = await open(demo.url);
  // Without a handler we answer 5.01; the demo server reports that answer as its own 2.05.
  const none = await c.get('/ask-back');
  assert.equal(none.codeString, '2.05', `without a handler: ${none.codeString} ${none.text()}`);
  assert.match(none.text(), /it answered 5\.01 Not Implemented$/);

  const seen = [];
  c.serve(async (req) => {
    seen.push(req);
    return { code: '2.05', payload: 'I am a node test', contentFormat: ContentFormat.TEXT };
  });
  const r = await c.get('/ask-back');
  assert.equal(r.ok, true);
  assert.match(r.text(), /I am a node test/);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].method, 'GET');
  assert.equal(seen[0].code, Code.GET);
  assert.equal(seen[0].path, '/whoami');

  c.serve(() => ({ payload: 'second handler' }));
  assert.match((await c.get('/ask-back')).text(), /second handler/);
  c.close();
});

test('a request that gets no answer rejects with CoapError("timeout")', async () => {
  const c = await open(demo.url);
  c.serve(() => new Promise(() => {})); // never answers /whoami, so /ask-back cannot answer us
  const t0 = Date.now();
  await assert.rejects(c.get('/ask-back', { timeout: 400 }), (e) => e instanceof CoapError && e.message === 'timeout');
  assert.ok(Date.now() - t0 < 3000);
  c.close();
});

test('block-wise GET of 100 KiB: Block2 asked for (1024) and imposed by our Max-Message-Size (1152)', async () => {
  const body = randomBytes(100 * 1024);
  writeFileSync(join(dir, 'big.bin'), body);
  const log = [];
  const c = await open(files.url, { onLog: (e) => log.push(e) });
  const r = await c.get('/big.bin', { blockSize: 1024 });
  assert.equal(r.codeString, '2.05');
  assert.equal(Buffer.compare(Buffer.from(r.payload), body), 0);
  const blocks = log.filter((e) => e.direction === 'in' && e.kind === 'response').map((e) => e.message.options.find(([n]) => n === Option.BLOCK2));
  assert.equal(blocks.length, 100);
  assert.deepEqual(blocks.map((b) => decodeBlock(b[1]).num), [...Array(100).keys()]);
  assert.equal(r.options.some(([n]) => n === Option.BLOCK2), false, 'the whole body has no Block2');
  c.close();

  const small = [];
  const c2 = await open(files.url, { maxMessageSize: 1152, onLog: (e) => small.push(e) });
  const r2 = await c2.get('/big.bin');
  assert.equal(Buffer.compare(Buffer.from(r2.payload), body), 0);
  const ins = small.filter((e) => e.direction === 'in');
  assert.ok(ins.length >= 100, `${ins.length} messages`);
  for (const e of ins) assert.ok(e.bytes <= 1152, `received ${e.bytes} bytes`);
  c2.close();
});

test('block-wise PUT of 100 KiB (Block1 1024, one Request-Tag) and of 3 MiB (BERT), read back', async () => {
  const log = [];
  const c = await open(files.url, { onLog: (e) => log.push(e) });
  const body = randomBytes(100 * 1024);
  const put = await c.put('/up.bin', body, { blockSize: 1024, contentFormat: ContentFormat.OCTET_STREAM });
  assert.ok(put.ok, `${put.codeString} ${put.text()}`);
  assert.ok(['2.01', '2.04'].includes(put.codeString));
  const reqs = log.filter((e) => e.direction === 'out' && e.kind === 'request');
  assert.equal(reqs.length, 100);
  const tags = new Set(reqs.map((e) => toHex(e.message.options.find(([n]) => n === Option.REQUEST_TAG)[1])));
  assert.equal(tags.size, 1, 'one Request-Tag for the upload');
  const b1 = reqs.map((e) => decodeBlock(e.message.options.find(([n]) => n === Option.BLOCK1)[1]));
  assert.deepEqual(b1.map((b) => b.num), [...Array(100).keys()]);
  assert.deepEqual(b1.map((b) => b.more), [...Array(99).fill(true), false]);
  const continues = log.filter((e) => e.direction === 'in' && e.summary.startsWith('2.31 Continue'));
  assert.equal(continues.length, 99);
  assert.equal(Buffer.compare(readFileSync(join(dir, 'up.bin')), body), 0);
  assert.equal(Buffer.compare(Buffer.from((await c.get('/up.bin')).payload), body), 0);

  // 3 MiB does not fit the peer's Max-Message-Size: BERT blocks without being asked
  const huge = randomBytes(3 << 20);
  log.length = 0;
  const put2 = await c.put('/huge.bin', huge);
  assert.ok(put2.ok, `${put2.codeString} ${put2.text()}`);
  const out = log.filter((e) => e.direction === 'out' && e.kind === 'request');
  assert.ok(out.length >= 4 && out.length <= 5, `${out.length} requests`);
  for (const e of out) {
    assert.ok(e.bytes <= c.peer.maxMessageSize, `${e.bytes} > ${c.peer.maxMessageSize}`);
    assert.equal(decodeBlock(e.message.options.find(([n]) => n === Option.BLOCK1)[1]).szx, 7);
  }
  assert.equal(Buffer.compare(readFileSync(join(dir, 'huge.bin')), huge), 0);
  assert.equal((await c.delete('/huge.bin')).codeString, '2.02');
  c.close();
});

test('release: 7.04, the connection closes, later requests fail with CoapError', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  assert.equal((await c.get('/hello')).ok, true);
  const closed = await Promise.race([c.release(), sleep(5000).then(() => 'hang')]);
  assert.equal(closed.code, 1000);
  assert.ok(log.some((e) => e.direction === 'out' && e.summary.startsWith('7.04 Release')));
  await assert.rejects(c.get('/hello'), CoapError);
  await assert.rejects(c.ping(), CoapError);
});

test('abort: 7.05 with its diagnostic; pending requests reject', async () => {
  const log = [];
  const c = await open(demo.url, { onLog: (e) => log.push(e) });
  c.serve(() => new Promise(() => {}));
  const pending = c.get('/ask-back');
  await sleep(200);
  c.abort('test is over');
  await assert.rejects(pending, (e) => e instanceof CoapError && /aborted: test is over/.test(e.message));
  const abort = log.find((e) => e.summary.startsWith('7.05'));
  assert.equal(new TextDecoder().decode(abort.message.payload), 'test is over');
  assert.ok(await Promise.race([c.closed, sleep(5000).then(() => null)]));
});
