// Unit tests of web/coap.js's codec, option values and link-format parser (node --test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  encodeMessage, decodeMessage, CoapError, encodeUint, decodeUint, encodeBlock, decodeBlock,
  parseLinkFormat, fromHex, toHex, codeString, parseCode, optionName, Code, Option, ContentFormat,
  contentFormatName, describeMessage, websocketUrl, normalizeOptions, formatOptionValue,
} from '../coap.js';

const vectors = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const limitsOf = (v) => ({ maxTokenLength: v.extended_tokens ? 65804 : 8 });

test('vectors.json has both kinds', () => {
  assert.ok(vectors.valid.length >= 30);
  assert.ok(vectors.invalid.length >= 15);
});

for (const v of vectors.valid) {
  test(`vector decodes and re-encodes: ${v.name}`, () => {
    const bytes = fromHex(v.hex);
    const m = decodeMessage(bytes, limitsOf(v));
    assert.equal(m.code, v.code);
    assert.equal(toHex(m.token), v.token);
    assert.deepEqual(m.options.map(([n, b]) => [n, toHex(b)]), v.options);
    assert.equal(toHex(m.payload), v.payload);
    assert.equal(toHex(encodeMessage(m)), v.hex);
    // and from the fields alone
    const fields = { code: v.code, token: fromHex(v.token), options: v.options.map(([n, h]) => [n, fromHex(h)]), payload: fromHex(v.payload) };
    assert.equal(toHex(encodeMessage(fields)), v.hex);
  });
}

for (const v of vectors.invalid) {
  test(`malformed input throws CoapError: ${v.name}`, () => {
    assert.throws(() => decodeMessage(fromHex(v.hex), limitsOf(v)), CoapError);
  });
}

test('extended tokens are refused unless allowed', () => {
  const nine = encodeMessage({ code: 1, token: new Uint8Array(9) });
  assert.equal(nine[0], 0x09);
  assert.throws(() => decodeMessage(nine), /reserved token length nibble 9/);
  assert.equal(decodeMessage(nine, { maxTokenLength: 9 }).token.length, 9);
  assert.throws(() => decodeMessage(encodeMessage({ code: 1, token: new Uint8Array(10) }), { maxTokenLength: 9 }), /exceeds the limit/);
  const big = encodeMessage({ code: 1, token: new Uint8Array(65804) });
  assert.deepEqual([...big.subarray(0, 4)], [0x0e, 0x01, 0xff, 0xff]);
  assert.equal(decodeMessage(big, { maxTokenLength: 65804 }).token.length, 65804);
  assert.throws(() => encodeMessage({ code: 1, token: new Uint8Array(65805) }), CoapError);
});

test('option delta and length extensions at every boundary', () => {
  for (const number of [0, 1, 12, 13, 14, 268, 269, 270, 1000, 65535]) {
    for (const len of [0, 12, 13, 268, 269, 65804]) {
      const value = new Uint8Array(len).fill(0x5a);
      const bytes = encodeMessage({ code: 69, token: new Uint8Array(0), options: [[number, value]], payload: new Uint8Array(0) });
      const nib = (n) => (n < 13 ? n : n < 269 ? 13 : 14);
      assert.equal(bytes[2], (nib(number) << 4) | nib(len), `header of option ${number} len ${len}`);
      const extLen = (n) => (n < 13 ? 0 : n < 269 ? 1 : 2);
      assert.equal(bytes.length, 3 + extLen(number) + extLen(len) + len);
      const m = decodeMessage(bytes);
      assert.equal(m.options.length, 1);
      assert.equal(m.options[0][0], number);
      assert.equal(m.options[0][1].length, len);
    }
  }
  assert.throws(() => encodeMessage({ code: 1, options: [[1, new Uint8Array(65805)]] }), CoapError);
  assert.throws(() => encodeMessage({ code: 1, options: [[65536, new Uint8Array(0)]] }), CoapError);
});

test('options are written in number order, stable among equal numbers', () => {
  const bytes = encodeMessage({ code: 1, token: Uint8Array.of(7), options: [[15, 'q'], [11, 'a'], [6, 0], [11, 'b']] });
  const m = decodeMessage(bytes);
  assert.deepEqual(m.options.map(([n, v]) => [n, new TextDecoder().decode(v)]), [[6, ''], [11, 'a'], [11, 'b'], [15, 'q']]);
  assert.equal(describeMessage(m), 'GET /a/b?q token 07 Observe:0');
  assert.deepEqual(normalizeOptions([[12, 50]]), [[12, Uint8Array.of(50)]]);
});

test('uint option values are minimal', () => {
  const cases = [[0, ''], [1, '01'], [255, 'ff'], [256, '0100'], [65535, 'ffff'], [65536, '010000'], [16777216, '01000000'], [0xffffffff, 'ffffffff']];
  for (const [n, h] of cases) {
    assert.equal(toHex(encodeUint(n)), h, `encode ${n}`);
    assert.equal(decodeUint(fromHex(h)), n, `decode ${h}`);
  }
  assert.equal(decodeUint(fromHex('0001')), 1); // leading zeros are tolerated on receipt
  assert.throws(() => encodeUint(-1), CoapError);
  assert.throws(() => encodeUint(2 ** 32), CoapError);
  assert.throws(() => encodeUint(1.5), CoapError);
  assert.throws(() => decodeUint(new Uint8Array(5)), CoapError);
});

test('block options encode and decode', () => {
  const cases = [
    [{ num: 0, more: false, szx: 0 }, '', 16],
    [{ num: 0, more: true, szx: 6 }, '0e', 1024],
    [{ num: 3, more: false, szx: 7 }, '37', 1024],
    [{ num: 15, more: true, szx: 2 }, 'fa', 64],
    [{ num: 16, more: false, szx: 4 }, '0104', 256],
    [{ num: 4095, more: true, szx: 5 }, 'fffd', 512],
    [{ num: 4096, more: false, szx: 6 }, '010006', 1024],
    [{ num: (1 << 20) - 1, more: true, szx: 6 }, 'fffffe', 1024],
  ];
  for (const [b, h, size] of cases) {
    assert.equal(toHex(encodeBlock(b)), h, JSON.stringify(b));
    assert.deepEqual(decodeBlock(fromHex(h)), { ...b, size });
  }
  assert.throws(() => encodeBlock({ num: 1 << 20, szx: 6 }), CoapError);
  assert.throws(() => encodeBlock({ num: 0, szx: 8 }), CoapError);
  assert.throws(() => decodeBlock(new Uint8Array(4)), CoapError);
  assert.equal(formatOptionValue(Option.BLOCK2, fromHex('0e')), '0/1/1024');
  assert.equal(formatOptionValue(Option.BLOCK1, fromHex('37')), '3/0/BERT');
});

test('codes, names and content formats', () => {
  assert.equal(codeString(69), '2.05');
  assert.equal(codeString(1), '0.01');
  assert.equal(codeString(Code.CSM), '7.01');
  assert.equal(codeString(132), '4.04');
  assert.equal(parseCode('2.05'), 69);
  assert.equal(parseCode('5.03'), 163);
  assert.equal(parseCode('get'), 1);
  assert.equal(parseCode('iPATCH'), 7);
  assert.equal(parseCode(68), 68);
  assert.throws(() => parseCode('2.32'), CoapError);
  assert.throws(() => parseCode('teapot'), CoapError);
  assert.equal(Code.parse('4.04'), 132);
  assert.equal(Code.name(132), 'Not Found');
  assert.deepEqual(Object.keys(Code).slice(0, 8), ['EMPTY', 'GET', 'POST', 'PUT', 'DELETE', 'FETCH', 'PATCH', 'IPATCH']);
  assert.ok(Object.values(Code).every((v) => typeof v === 'number'), 'helpers are not enumerable');
  assert.equal(optionName(Option.URI_PATH), 'Uri-Path');
  assert.equal(optionName(Option.NO_RESPONSE), 'No-Response');
  assert.equal(optionName(2, Code.CSM), 'Max-Message-Size');
  assert.equal(optionName(4, Code.RELEASE), 'Hold-Off');
  assert.equal(optionName(65001), 'Option 65001');
  assert.equal(ContentFormat.CBOR, 60);
  assert.equal(contentFormatName(ContentFormat.LINK_FORMAT), 'application/link-format');
  assert.equal(contentFormatName(9999), 'Content-Format 9999');
});

test('message descriptions name options and decode blocks', () => {
  const m = decodeMessage(encodeMessage({
    code: 69, token: Uint8Array.of(0x1a),
    options: [[Option.OBSERVE, 12], [Option.CONTENT_FORMAT, 50], [Option.BLOCK2, encodeBlock({ num: 2, more: true, szx: 6 })], [Option.ETAG, Uint8Array.of(0xbe, 0xef)]],
    payload: 'x'.repeat(1024),
  }));
  assert.equal(describeMessage(m), '2.05 Content token 1a ETag:beef Observe:12 Content-Format:json Block2:2/1/1024 1024 B');
  assert.equal(describeMessage(decodeMessage(fromHex('00e12310000020'))), '7.01 CSM token - Max-Message-Size:1048576 Block-Wise-Transfer');
});

test('URLs map to the WebSocket endpoint', () => {
  assert.equal(websocketUrl('coap+ws://example.org/a/b?x=1'), 'ws://example.org/.well-known/coap');
  assert.equal(websocketUrl('coap+ws://127.0.0.1:8080'), 'ws://127.0.0.1:8080/.well-known/coap');
  assert.equal(websocketUrl('coaps+ws://[::1]:4443/x'), 'wss://[::1]:4443/.well-known/coap');
  assert.equal(websocketUrl('ws://h:1/'), 'ws://h:1/.well-known/coap');
  assert.equal(websocketUrl('wss://h/custom/coap'), 'wss://h/custom/coap');
  assert.throws(() => websocketUrl('coap://h/x'), CoapError);
  assert.throws(() => websocketUrl('coap+ws:///x'), CoapError);
});

test('link-format parsing (RFC 6690)', () => {
  assert.deepEqual(parseLinkFormat(''), []);
  assert.deepEqual(parseLinkFormat('</hello>'), [{ target: '/hello', params: {} }]);
  const text = '</sensors/temp>;rt="temperature-c";if="sensor";obs;ct=0,\n'
    + ' </sensors/light>;rt="light-lux core.s";title="Light, \\"lux\\"";ct=41;sz=1234,'
    + '<coap://other/x>;anchor="/sensors";rel=alternate;ct=0;ct=50';
  assert.deepEqual(parseLinkFormat(text), [
    { target: '/sensors/temp', params: { rt: 'temperature-c', if: 'sensor', obs: true, ct: '0' } },
    { target: '/sensors/light', params: { rt: 'light-lux core.s', title: 'Light, "lux"', ct: '41', sz: '1234' } },
    { target: 'coap://other/x', params: { anchor: '/sensors', rel: 'alternate', ct: '0' } },
  ]);
  // what coapws serve's demo site sends
  const demo = parseLinkFormat('</ask-back>;title="Asks the requesting client for a resource (role reversal)",</time>;obs;title="Current UTC time, observable: a notification every second";ct=0');
  assert.equal(demo.length, 2);
  assert.equal(demo[1].params.obs, true);
  assert.equal(demo[0].params.title, 'Asks the requesting client for a resource (role reversal)');
  for (const bad of ['/no-brackets', '<unterminated', '</a>;', '</a>;=x', '</a> </b>', '</a>;title="open', '</a>,']) {
    assert.throws(() => parseLinkFormat(bad), CoapError, bad);
  }
});
