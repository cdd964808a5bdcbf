// Payload and option rendering for the console: a payload is decoded by its content format
// (text, JSON pretty-printed, CBOR as diagnostic notation, link-format as a list, otherwise hex).

import { parseLinkFormat } from './coap.js';
import { cborToDiagnostic } from './console-cbor.js';

/** Content formats offered by the choosers (number, name), from the IANA registry. */
export const CONTENT_FORMATS = [
  [0, 'text/plain; charset=utf-8'],
  [40, 'application/link-format'],
  [41, 'application/xml'],
  [42, 'application/octet-stream'],
  [47, 'application/exi'],
  [50, 'application/json'],
  [51, 'application/json-patch+json'],
  [52, 'application/merge-patch+json'],
  [60, 'application/cbor'],
  [61, 'application/cwt'],
  [110, 'application/senml+json'],
  [112, 'application/senml+cbor'],
  [11050, 'application/cbor-seq'],
  [11542, 'application/vnd.oma.lwm2m+tlv'],
];

export function contentFormatName(cf) {
  const hit = CONTENT_FORMATS.find(([n]) => n === cf);
  return hit ? hit[1] : `content format ${cf}`;
}

const JSON_FORMATS = new Set([50, 51, 52, 110, 11543]);
const CBOR_FORMATS = new Set([60, 61, 112, 11050, 11544]);
const TEXT_FORMATS = new Set([0, 41]);

// Options whose values are unsigned integers, and those that are strings (RFC 7252 §5.10, 7641, 7959).
export const UINT_OPTIONS = new Set([6, 7, 12, 14, 17, 23, 27, 28, 60, 258]);
export const STRING_OPTIONS = new Set([3, 8, 11, 15, 20, 35, 39]);

/** Option names for the extra-options field, so `Max-Age=5` works as well as `14=5`. */
export const OPTION_NUMBERS = {
  'if-match': 1, 'uri-host': 3, etag: 4, 'if-none-match': 5, observe: 6, 'uri-port': 7,
  'location-path': 8, 'uri-path': 11, 'content-format': 12, 'max-age': 14, 'uri-query': 15,
  'hop-limit': 16, accept: 17, 'location-query': 20, block2: 23, block1: 27, size2: 28,
  'proxy-uri': 35, 'proxy-scheme': 39, size1: 60, 'no-response': 258,
};

export function hex(bytes, sep = ' ') {
  return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join(sep);
}

export function uintValue(bytes) {
  let v = 0;
  for (const b of bytes) v = v * 256 + b;
  return v;
}

function uintBytes(v) {
  const out = [];
  let n = BigInt(v);
  if (n < 0n) throw new Error(`${v} is negative`);
  while (n > 0n) { out.unshift(Number(n & 0xffn)); n >>= 8n; }
  return Uint8Array.from(out);
}

export function hexToBytes(text) {
  const clean = text.replace(/^0x/i, '').replace(/[\s:,]/g, '');
  if (clean.length % 2 || /[^0-9a-f]/i.test(clean)) throw new Error(`not hex: ${text}`);
  return Uint8Array.from(clean.match(/../g) || [], (x) => parseInt(x, 16));
}

/**
 * Parses the extra-options field: one `number=value` (or `Name=value`) per line or comma.
 * Values: `0x…` is hex, a number for an integer option is an integer, otherwise UTF-8 text;
 * an empty value is an empty option.
 * @returns {Array<[number, Uint8Array]>}
 */
export function parseOptions(text) {
  const out = [];
  for (const raw of text.split(/[\n,]/)) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    const key = (eq < 0 ? line : line.slice(0, eq)).trim();
    const value = eq < 0 ? '' : line.slice(eq + 1).trim();
    const number = /^\d+$/.test(key) ? Number(key) : OPTION_NUMBERS[key.toLowerCase()];
    if (number === undefined) throw new Error(`unknown option ${key}: use its number`);
    let bytes;
    if (/^0x[0-9a-f]*$/i.test(value)) bytes = hexToBytes(value);
    else if (/^".*"$/.test(value)) bytes = new TextEncoder().encode(value.slice(1, -1));
    else if (UINT_OPTIONS.has(number) || (!STRING_OPTIONS.has(number) && /^\d+$/.test(value))) {
      if (!/^\d*$/.test(value)) throw new Error(`option ${key} takes an integer, not ${value}`);
      bytes = value === '' ? new Uint8Array() : uintBytes(value);
    } else bytes = new TextEncoder().encode(value);
    out.push([number, bytes]);
  }
  return out;
}

/** An option's value as a person reads it. */
export function optionValueText(number, bytes) {
  if (UINT_OPTIONS.has(number)) {
    const v = uintValue(bytes);
    if (number === 12 || number === 17) return `${v} (${contentFormatName(v)})`;
    if (number === 23 || number === 27) {
      const szx = v & 7;
      return `${v} (num ${Math.floor(v / 16)}, ${v & 8 ? 'more' : 'last'}, ${szx === 7 ? 'BERT' : `size ${16 << szx}`})`;
    }
    return String(v);
  }
  if (STRING_OPTIONS.has(number)) return JSON.stringify(new TextDecoder().decode(bytes));
  return bytes.length ? `0x${hex(bytes, '')}` : '(empty)';
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16);
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(6, '0')}  ${hex(row).padEnd(47)}  ${ascii}`);
  }
  return lines.join('\n');
}

/**
 * Renders a payload by content format into a DOM node, with a label saying how it was decoded.
 * @param {Uint8Array} payload
 * @param {number|undefined|null} cf
 * @returns {HTMLElement}
 */
export function renderPayload(payload, cf) {
  const box = el('div', { class: 'payload-view' });
  const say = (how, node) => {
    box.dataset.decoded = how;
    box.append(el('div', { class: 'payload-how' }, `${how} · ${payload.length} byte${payload.length === 1 ? '' : 's'}`), node);
    return box;
  };
  if (payload.length === 0) return say('empty', el('pre', { class: 'payload-body' }, '(no payload)'));
  const utf8 = () => new TextDecoder('utf-8', { fatal: true }).decode(payload);
  try {
    if (JSON_FORMATS.has(cf)) {
      return say('JSON', el('pre', { class: 'payload-body' }, JSON.stringify(JSON.parse(utf8()), null, 2)));
    }
    if (CBOR_FORMATS.has(cf)) {
      return say('CBOR diagnostic notation', el('pre', { class: 'payload-body' }, cborToDiagnostic(payload)));
    }
    if (cf === 40) {
      const links = parseLinkFormat(utf8());
      const list = el('ul', { class: 'payload-links' });
      for (const link of links) {
        const params = paramEntries(link.params).map(([k, v]) => `${k}=${v === true ? '' : v}`.replace(/=$/, ''));
        list.append(el('li', {}, el('code', {}, `<${link.target}>`), ' ', params.join('; ')));
      }
      return say(`link-format, ${links.length} link${links.length === 1 ? '' : 's'}`, list);
    }
    if (TEXT_FORMATS.has(cf) || cf === undefined || cf === null) {
      const text = utf8();
      // Without a content format, text that decodes cleanly is shown as text.
      if (cf === undefined || cf === null) {
        if (/[\x00-\x08\x0e-\x1f]/.test(text)) throw new Error('binary');
        return say('text (no content format)', el('pre', { class: 'payload-body' }, text));
      }
      return say('text', el('pre', { class: 'payload-body' }, text));
    }
  } catch (e) {
    const dump = say('hex', el('pre', { class: 'payload-body' }, hexDump(payload)));
    if (e.message !== 'binary' && cf !== undefined && cf !== null) {
      dump.append(el('div', { class: 'payload-error' }, `not valid ${contentFormatName(cf)}: ${e.message}`));
    }
    return dump;
  }
  return say('hex', el('pre', { class: 'payload-body' }, hexDump(payload)));
}

/** Link parameters as [name, value] pairs, whether the library gives an object, a Map or pairs. */
export function paramEntries(params) {
  if (!params) return [];
  if (params instanceof Map) return [...params.entries()];
  if (Array.isArray(params)) return params.map((p) => (Array.isArray(p) ? p : [p.name, p.value]));
  return Object.entries(params);
}

/** Encodes the payload editor's text by the chosen mode. */
export function encodePayload(text, mode) {
  if (mode === 'hex') return hexToBytes(text);
  return new TextEncoder().encode(text);
}
