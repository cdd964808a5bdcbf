// Real peers for the end-to-end tests: `coapws serve` and aiocoap's WebSocket servers, each on
// free loopback ports, every wait bounded, all killed when the test process ends.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import dgram from 'node:dgram';

export const repo = fileURLToPath(new URL('../..', import.meta.url));

const children = new Set();
const killAll = () => { for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ } };
process.on('exit', killAll);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => { killAll(); process.exit(1); });

/** The WebSocket constructor the tests use: node's global one (node --experimental-websocket). */
export function webSocket() {
  if (typeof globalThis.WebSocket !== 'function') {
    throw new Error('no global WebSocket: run node with --experimental-websocket (scripts/test-web.sh does)');
  }
  return globalThis.WebSocket;
}

function start(cmd, args, opts = {}) {
  if (!existsSync(cmd)) throw new Error(`${cmd} is missing${opts.hint ? ': ' + opts.hint : ''}`);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd ?? repo });
  children.add(child);
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((r) => child.on('exit', (code, signal) => { children.delete(child); r({ code, signal }); }));
  return {
    child,
    output: () => out,
    exited,
    /** Resolves with the match once the output matches re; rejects after ms or on exit. */
    waitFor(re, ms, what) {
      return new Promise((resolve, reject) => {
        const check = () => { const m = re.exec(out); if (m) { done(); resolve(m); } };
        const timer = setTimeout(() => { done(); reject(new Error(`${what}: not ready within ${ms} ms; output:\n${out}`)); }, ms);
        const onExit = () => { done(); reject(new Error(`${what} exited early; output:\n${out}`)); };
        const done = () => { clearTimeout(timer); child.stdout.off('data', check); child.stderr.off('data', check); child.off('exit', onExit); };
        child.stdout.on('data', check);
        child.stderr.on('data', check);
        child.once('exit', onExit);
        check();
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** `coapws serve ARGS --ws 127.0.0.1:0`; resolves with {url, port, stop, output} once it listens. */
export async function startCoapws(args = []) {
  const bin = process.env.COAPWS_BIN ?? join(repo, 'target/debug/coapws');
  const p = start(bin, ['serve', ...args, '--ws', '127.0.0.1:0'], { hint: 'build it (cargo build) or set COAPWS_BIN' });
  const m = await p.waitFor(/listening on coap\+ws:\/\/127\.0\.0\.1:(\d+)/, 15000, 'coapws serve');
  const port = Number(m[1]);
  return { ...p, port, url: `coap+ws://127.0.0.1:${port}` };
}

function tcpFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function udpFree(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => { s.close(); resolve(false); });
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A port P free for UDP and TCP whose P+3000 is free for TCP (aiocoap's WebSocket port rule). */
async function aiocoapPort() {
  for (let i = 0; i < 50; i++) {
    const p = 20000 + Math.floor(Math.random() * 30000);
    if ((await tcpFree(p)) && (await udpFree(p)) && (await tcpFree(p + 3000))) return p;
  }
  throw new Error('no free port pair for aiocoap');
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function waitListening(p, port, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (p.child.exitCode !== null) throw new Error(`${what} exited early; output:\n${p.output()}`);
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: port ${port} not listening within ${ms} ms; output:\n${p.output()}`);
}

const venv = join(repo, 'target/peers/venv/bin');
const venvHint = 'aiocoap is not installed: run scripts/install-peers.sh';
const peersDir = join(repo, 'crates/coapws-cli/tests/peers');

/** aiocoap serving an observable /counter (observable_server.py); WebSocket on port+3000. */
export async function startAiocoapObservable() {
  const port = await aiocoapPort();
  const p = start(join(venv, 'python'), [join(peersDir, 'observable_server.py'), String(port)], { hint: venvHint });
  await p.waitFor(/^ready$/m, 20000, 'observable_server.py');
  await waitListening(p, port + 3000, 10000, 'observable_server.py');
  return { ...p, port: port + 3000, url: `coap+ws://127.0.0.1:${port + 3000}` };
}

/** aiocoap-fileserver serving DIR; WebSocket on port+3000. */
export async function startAiocoapFileserver(dir) {
  const port = await aiocoapPort();
  const p = start(join(venv, 'aiocoap-fileserver'), ['--bind', `127.0.0.1:${port}`, dir], { hint: venvHint });
  await waitListening(p, port + 3000, 20000, 'aiocoap-fileserver');
  return { ...p, port: port + 3000, url: `coap+ws://127.0.0.1:${port + 3000}` };
}

/** The venv's python running ARGS; resolves once its output matches ready (bounded). */
export async function startVenvPython(args, ready, what) {
  const p = start(join(venv, 'python'), args, { hint: venvHint });
  const m = await p.waitFor(ready, 20000, what);
  return { ...p, match: m };
}
