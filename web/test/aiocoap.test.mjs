// Interop: web/coap.js in node against aiocoap 0.4.17's WebSocket server (target/peers/venv).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, Option, decodeBlock, parseLinkFormat } from '../coap.js';
import { startAiocoapObservable, startAiocoapFileserver, webSocket } from './servers.mjs';

let counter, fileserver, dir;
const WebSocket = webSocket();
const open = (url, opts = {}) => connect(url, { WebSocket, timeout: 10000, ...opts });

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coapws-web-aiocoap-'));
  writeFileSync(join(dir, 'big.bin'), randomBytes(100 * 1024));
  [counter, fileserver] = await Promise.all([startAiocoapObservable(), startAiocoapFileserver(dir)]);
});

after(async () => {
  await counter?.stop();
  await fileserver?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('aiocoap: CSM, GET /counter, discovery, ping', async () => {
  const log = [];
  const c = await open(counter.url, { onLog: (e) => log.push(e) });
  // aiocoap's CSM as captured in CONFORMANCE.md §9
  assert.deepEqual(c.peer, { maxMessageSize: 1048576, blockWiseTransfer: true });
  const r = await c.get('/counter');
  assert.equal(r.codeString, '2.05');
  assert.equal(r.contentFormat, 0);
  assert.match(r.text(), /^count=\d+$/);
  const links = parseLinkFormat((await c.get('/.well-known/core')).text());
  assert.ok(links.some((l) => l.target === '/counter'), JSON.stringify(links));
  assert.equal((await c.get('/nothing-here')).codeString, '4.04');
  assert.ok((await c.ping()) >= 0);
  c.close();
});

test('aiocoap: observe /counter, at least two notifications with growing counts, then cancel', async () => {
  const log = [];
  const c = await open(counter.url, { onLog: (e) => log.push(e) });
  const obs = c.observe('/counter');
  const counts = [];
  for await (const n of obs) {
    assert.equal(n.ok, true);
    assert.notEqual(n.observe, undefined);
    counts.push(Number(/^count=(\d+)$/.exec(n.text())[1]));
    if (counts.length === 3) break;
  }
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i] > counts[i - 1], `counts ${counts}`);
  const dereg = log.filter((e) => e.direction === 'out' && e.summary.includes('Observe:1'));
  assert.equal(dereg.length, 1);
  // aiocoap answered the deregistration, and still answers
  const answer = log.filter((e) => e.direction === 'in' && e.message.token.join() === obs.token.join()).at(-1);
  assert.ok(!answer.summary.includes('Observe:'), answer.summary);
  assert.match((await c.get('/counter')).text(), /^count=\d+$/);
  c.close();
});

test('aiocoap-fileserver: 100 KiB block-wise GET, late (its choice) and early (Block2 1024 asked)', async () => {
  const body = (await import('node:fs')).readFileSync(join(dir, 'big.bin'));
  for (const opts of [{}, { blockSize: 1024 }, { blockSize: 256 }]) {
    const log = [];
    const c = await open(fileserver.url, { onLog: (e) => log.push(e) });
    const r = await c.get('/big.bin', opts);
    assert.equal(r.codeString, '2.05', JSON.stringify(opts));
    assert.equal(Buffer.compare(Buffer.from(r.payload), body), 0, JSON.stringify(opts));
    const blocks = log
      .filter((e) => e.direction === 'in' && e.kind === 'response')
      .map((e) => decodeBlock(e.message.options.find(([n]) => n === Option.BLOCK2)[1]));
    assert.ok(blocks.length >= 2, `block-wise: ${blocks.length} responses for ${JSON.stringify(opts)}`);
    if (opts.blockSize) assert.equal(blocks.length, (100 * 1024) / opts.blockSize);
    assert.deepEqual(blocks.map((b) => b.num * b.size), blocks.map((_, i) => i * blocks[0].size));
    c.close();
  }
});
