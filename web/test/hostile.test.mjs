// web/coap.js against a WebSocket peer that breaks the rules on purpose (a few lines of Python
// with the `websockets` package from the aiocoap venv): oversized and text frames, no CSM, a bad
// CSM option, Abort, Release and Ping from the peer. The peer prints every frame it receives.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, CoapError, fromHex } from '../coap.js';
import { startVenvPython, webSocket } from './servers.mjs';

const peerScript = String.raw`
import asyncio, sys
from websockets.asyncio.server import serve

CSM = bytes.fromhex("00e12400100000" "20")  # Max-Message-Size 1048576 (4 bytes), Block-Wise-Transfer

def say(*words):
    print(*words, flush=True)

async def handler(ws):
    path = ws.request.path.strip("/")
    async def recv():
        m = await ws.recv()
        say("recv", path, m.hex() if isinstance(m, bytes) else "text:" + m)
        return m
    try:
        if path == "nocsm":
            await ws.send(bytes.fromhex("014501ff6869"))
        elif path == "badcsm":
            await ws.send(bytes.fromhex("00e1b0"))
        elif path == "silent":
            pass
        else:
            await ws.send(CSM)
            await recv()  # the client's CSM
            if path == "oversize":
                await ws.send(bytes.fromhex("0045ff") + b"x" * 2000)
            elif path == "malformed":
                await ws.send(bytes.fromhex("0045ff"))  # payload marker without payload
            elif path == "text":
                await ws.send("hello")
            elif path == "abort":
                await recv()  # a request
                await ws.send(bytes.fromhex("00e5ff") + b"going away")
            elif path == "release":
                req = await recv()
                token = req[2:2 + (req[0] & 15)]
                await ws.send(bytes.fromhex("00e4"))
                await asyncio.sleep(0.3)
                await ws.send(bytes([len(token), 0x45]) + token + b"\xffanswered after Release")
            elif path == "ping":
                await ws.send(bytes.fromhex("02e27071"))
                await ws.send(bytes.fromhex("00e2"))
                await ws.send(bytes.fromhex("0000"))  # Empty: ignored
                await ws.send(bytes.fromhex("01e27220"))  # Custody
        while True:
            await recv()
    except Exception as e:
        say("closed", path, getattr(getattr(e, "rcvd", None), "code", "-"))

async def main():
    async with serve(handler, "127.0.0.1", 0, subprotocols=["coap"]) as server:
        say("port", server.sockets[0].getsockname()[1])
        await asyncio.sleep(600)

asyncio.run(main())
`;

let peer, base;
const WebSocket = webSocket();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  peer = await startVenvPython(['-c', peerScript], /^port (\d+)$/m, 'misbehaving WebSocket peer');
  base = `ws://127.0.0.1:${peer.match[1]}`;
});
after(async () => { await peer?.stop(); });

/** Lines the peer printed about PATH, waiting (bounded) until one matches re. */
async function peerSaw(path, re, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = peer.output().split('\n').filter((l) => l.split(' ')[1] === path);
    if (lines.some((l) => re.test(l))) return lines;
    if (Date.now() > deadline) assert.fail(`the peer did not see ${re} on /${path}; it saw:\n${lines.join('\n')}`);
    await sleep(50);
  }
}

const withTimeout = (p, ms = 5000) => Promise.race([p, sleep(ms).then(() => { throw new Error(`no result within ${ms} ms`); })]);

test('a message above our Max-Message-Size makes us Abort and close', async () => {
  const c = await connect(`${base}/oversize`, { WebSocket, maxMessageSize: 1152, timeout: 5000 });
  const closed = await withTimeout(c.closed);
  assert.ok(closed);
  const lines = await peerSaw('oversize', /^recv oversize 00e5ff/);
  const abort = lines.find((l) => l.startsWith('recv oversize 00e5'));
  assert.match(Buffer.from(fromHex(abort.split(' ')[2].slice(6))).toString(), /exceeds Max-Message-Size 1152/);
  await assert.rejects(c.get('/x'), CoapError);
});

test('a text frame makes us Abort "Text frame received" and close (1000: the WebSocket API allows no 1003)', async () => {
  const c = await connect(`${base}/text`, { WebSocket, timeout: 5000 });
  await withTimeout(c.closed);
  await peerSaw('text', new RegExp('^recv text 00e5ff' + Buffer.from('Text frame received').toString('hex') + '$'));
  await peerSaw('text', /^closed text 1000$/);
});

test('a malformed message makes us Abort with a diagnostic and close', async () => {
  const c = await connect(`${base}/malformed`, { WebSocket, timeout: 5000 });
  await withTimeout(c.closed);
  const lines = await peerSaw('malformed', /^recv malformed 00e5ff/);
  const abort = lines.find((l) => l.startsWith('recv malformed 00e5'));
  assert.equal(Buffer.from(fromHex(abort.split(' ')[2].slice(6))).toString(), 'Malformed message: payload marker without payload');
});

test('a first message that is not a CSM: Abort "No CSM received", connect rejects', async () => {
  await assert.rejects(connect(`${base}/nocsm`, { WebSocket, timeout: 5000 }), CoapError);
  await peerSaw('nocsm', new RegExp('^recv nocsm 00e5ff' + Buffer.from('No CSM received').toString('hex') + '$'));
});

test('an unknown critical CSM option: Abort carrying Bad-CSM-Option', async () => {
  await assert.rejects(connect(`${base}/badcsm`, { WebSocket, timeout: 5000 }), CoapError);
  await peerSaw('badcsm', /^recv badcsm 00e5210bff/);
});

test('no CSM from the peer: connect rejects with a timeout, bounded', async () => {
  const t0 = Date.now();
  await assert.rejects(connect(`${base}/silent`, { WebSocket, timeout: 500 }), /timeout/);
  assert.ok(Date.now() - t0 < 3000);
});

test('Abort from the peer rejects what is pending and closes', async () => {
  const c = await connect(`${base}/abort`, { WebSocket, timeout: 5000 });
  await assert.rejects(withTimeout(c.get('/waiting')), (e) => e instanceof CoapError && /aborted by the peer: going away/.test(e.message));
  await withTimeout(c.closed);
});

test('Release from the peer: the outstanding request is still answered, then we close', async () => {
  const c = await connect(`${base}/release`, { WebSocket, timeout: 5000 });
  const r = await withTimeout(c.get('/slow'));
  assert.equal(r.text(), 'answered after Release');
  await withTimeout(c.closed);
  await assert.rejects(c.get('/after'), CoapError);
});

test('Ping from the peer is answered with Pong on its token; Empty is ignored; Custody too', async () => {
  const c = await connect(`${base}/ping`, { WebSocket, timeout: 5000 });
  await peerSaw('ping', /^recv ping 02e37071$/);
  await peerSaw('ping', /^recv ping 00e3$/);
  await peerSaw('ping', /^recv ping 01e372$/);
  const pongs = peer.output().split('\n').filter((l) => /^recv ping ..e3/.test(l));
  assert.equal(pongs.length, 3, 'one Pong per Ping, none for the Empty message');
  c.close();
});
