// coap.js: CoAP over WebSockets (RFC 8323) for browsers and node, with no dependencies.
//
// One ES module: the message codec (RFC 8323 §4.2 framing, RFC 7252 options, RFC 8974 extended
// tokens), RFC 6690 link-format parsing, and a connection that does the CSM exchange, Ping/Pong,
// Release and Abort, requests with block-wise transfer both ways (RFC 7959, BERT), Observe
// (RFC 7641) as an async iterator, and serving requests the server sends back (role reversal).
//
//   import { connect } from './coap.js';
//   const conn = await connect('coap+ws://example.org', { onLog: (e) => console.log(e.summary) });
//   const r = await conn.get('/hello');               // r.codeString, r.text(), r.json()
//   for await (const n of conn.observe('/time')) { … } // break deregisters
//   conn.serve(async (req) => ({ payload: 'I am a browser' }));
//
// In node 20 run with --experimental-websocket, or pass { WebSocket } (e.g. the "ws" package).
// A path that is an absolute URI ("coap://host/x") is sent as Proxy-Uri, for a proxying server.
// Closes always use WebSocket code 1000: the WebSocket API refuses 1002/1003/1007 from scripts.

/** @typedef {Array<[number, Uint8Array]>} OptionList options in wire order, values as bytes */
/** @typedef {{code: number, token: Uint8Array, options: OptionList, payload: Uint8Array}} CoapMessage */
/** @typedef {{num: number, more: boolean, szx: number, size: number}} BlockValue size is 1024 for BERT (szx 7) */

// ---------------------------------------------------------------- registries

const codeNames = {
  0: 'Empty', 1: 'GET', 2: 'POST', 3: 'PUT', 4: 'DELETE', 5: 'FETCH', 6: 'PATCH', 7: 'iPATCH',
  65: 'Created', 66: 'Deleted', 67: 'Valid', 68: 'Changed', 69: 'Content', 95: 'Continue',
  128: 'Bad Request', 129: 'Unauthorized', 130: 'Bad Option', 131: 'Forbidden', 132: 'Not Found',
  133: 'Method Not Allowed', 134: 'Not Acceptable', 136: 'Request Entity Incomplete', 137: 'Conflict',
  140: 'Precondition Failed', 141: 'Request Entity Too Large', 143: 'Unsupported Content-Format',
  150: 'Unprocessable Entity', 157: 'Too Many Requests',
  160: 'Internal Server Error', 161: 'Not Implemented', 162: 'Bad Gateway', 163: 'Service Unavailable',
  164: 'Gateway Timeout', 165: 'Proxying Not Supported', 168: 'Hop Limit Reached',
  225: 'CSM', 226: 'Ping', 227: 'Pong', 228: 'Release', 229: 'Abort',
};

/** Message codes: methods, responses and signals, as numbers (class << 5 | detail). */
export const Code = {
  EMPTY: 0, GET: 1, POST: 2, PUT: 3, DELETE: 4, FETCH: 5, PATCH: 6, IPATCH: 7,
  CREATED: 65, DELETED: 66, VALID: 67, CHANGED: 68, CONTENT: 69, CONTINUE: 95,
  BAD_REQUEST: 128, UNAUTHORIZED: 129, BAD_OPTION: 130, FORBIDDEN: 131, NOT_FOUND: 132,
  METHOD_NOT_ALLOWED: 133, NOT_ACCEPTABLE: 134, REQUEST_ENTITY_INCOMPLETE: 136, CONFLICT: 137,
  PRECONDITION_FAILED: 140, REQUEST_ENTITY_TOO_LARGE: 141, UNSUPPORTED_CONTENT_FORMAT: 143,
  INTERNAL_SERVER_ERROR: 160, NOT_IMPLEMENTED: 161, BAD_GATEWAY: 162, SERVICE_UNAVAILABLE: 163,
  GATEWAY_TIMEOUT: 164, PROXYING_NOT_SUPPORTED: 165,
  CSM: 225, PING: 226, PONG: 227, RELEASE: 228, ABORT: 229,
};
// Helpers on Code, not enumerable, so Object.entries(Code) lists codes only.
Object.defineProperties(Code, {
  /** "2.05" or 69 or "GET" -> 69 / 1; throws CoapError on anything else. */
  parse: { value: parseCode },
  /** 69 -> "2.05" */
  string: { value: (c) => codeString(c) },
  /** 69 -> "Content", 1 -> "GET" */
  name: { value: (c) => codeName(c) },
  isRequest: { value: (c) => c >= 1 && c < 32 },
  isResponse: { value: (c) => c >= 64 && c < 192 },
  isSignal: { value: (c) => c >= 224 },
  isSuccess: { value: (c) => c >> 5 === 2 },
});

/** Option numbers (RFC 7252 §12.2 and later registrations). */
export const Option = {
  IF_MATCH: 1, URI_HOST: 3, ETAG: 4, IF_NONE_MATCH: 5, OBSERVE: 6, URI_PORT: 7, LOCATION_PATH: 8,
  OSCORE: 9, URI_PATH: 11, CONTENT_FORMAT: 12, MAX_AGE: 14, URI_QUERY: 15, HOP_LIMIT: 16, ACCEPT: 17,
  Q_BLOCK1: 19, LOCATION_QUERY: 20, EDHOC: 21, BLOCK2: 23, BLOCK1: 27, SIZE2: 28, Q_BLOCK2: 31,
  PROXY_URI: 35, PROXY_SCHEME: 39, SIZE1: 60, ECHO: 252, NO_RESPONSE: 258, REQUEST_TAG: 292,
};

/** Signaling option numbers (RFC 8323 §5); they are per signaling code. */
export const SignalOption = {
  MAX_MESSAGE_SIZE: 2, BLOCK_WISE_TRANSFER: 4, EXTENDED_TOKEN_LENGTH: 6, // CSM
  CUSTODY: 2, // Ping, Pong
  ALTERNATIVE_ADDRESS: 2, HOLD_OFF: 4, // Release
  BAD_CSM_OPTION: 2, // Abort
};

// number -> [name, format] with format 'empty' | 'opaque' | 'uint' | 'string' | 'block'
const optionInfo = {
  1: ['If-Match', 'opaque'], 3: ['Uri-Host', 'string'], 4: ['ETag', 'opaque'], 5: ['If-None-Match', 'empty'],
  6: ['Observe', 'uint'], 7: ['Uri-Port', 'uint'], 8: ['Location-Path', 'string'], 9: ['OSCORE', 'opaque'],
  11: ['Uri-Path', 'string'], 12: ['Content-Format', 'uint'], 14: ['Max-Age', 'uint'], 15: ['Uri-Query', 'string'],
  16: ['Hop-Limit', 'uint'], 17: ['Accept', 'uint'], 19: ['Q-Block1', 'block'], 20: ['Location-Query', 'string'],
  21: ['EDHOC', 'empty'], 23: ['Block2', 'block'], 27: ['Block1', 'block'], 28: ['Size2', 'uint'],
  31: ['Q-Block2', 'block'], 35: ['Proxy-Uri', 'string'], 39: ['Proxy-Scheme', 'string'], 60: ['Size1', 'uint'],
  252: ['Echo', 'opaque'], 258: ['No-Response', 'uint'], 292: ['Request-Tag', 'opaque'],
};
const signalOptionInfo = {
  225: { 2: ['Max-Message-Size', 'uint'], 4: ['Block-Wise-Transfer', 'empty'], 6: ['Extended-Token-Length', 'uint'] },
  226: { 2: ['Custody', 'empty'] },
  227: { 2: ['Custody', 'empty'] },
  228: { 2: ['Alternative-Address', 'string'], 4: ['Hold-Off', 'uint'] },
  229: { 2: ['Bad-CSM-Option', 'uint'] },
};

function infoOf(number, code) {
  if (code >= 224) return signalOptionInfo[code]?.[number];
  return optionInfo[number];
}

/**
 * The registered name of an option ("Uri-Path"), or "Option N" for an unknown one.
 * @param {number} number
 * @param {number} [code] the message's code: signaling options (7.xx) have their own numbers
 * @returns {string}
 */
export function optionName(number, code) {
  return infoOf(number, code)?.[0] ?? `Option ${number}`;
}

/** Content-Format numbers (the CoRE Parameters registry). */
export const ContentFormat = {
  TEXT: 0, COSE_ENCRYPT0: 16, COSE_MAC0: 17, COSE_SIGN1: 18, LINK_FORMAT: 40, XML: 41, OCTET_STREAM: 42,
  EXI: 47, JSON: 50, JSON_PATCH: 51, MERGE_PATCH: 52, CBOR: 60, CWT: 61, MULTIPART_CORE: 62, CBOR_SEQ: 63,
  SENML_JSON: 110, SENSML_JSON: 111, SENML_CBOR: 112, SENSML_CBOR: 113, SENML_EXI: 114, SENSML_EXI: 115,
  COAP_GROUP_JSON: 256, PKCS7_MIME_SERVER_GENERATED_KEY: 280, PKCS8: 284, CSRATTRS: 285, PKCS10: 286,
  PKIX_CERT: 287, SENML_XML: 310, SENSML_XML: 311, OCF_CBOR: 10000, YANG_DATA_CBOR: 140, CORE_RD_JSON: 271,
};
const contentFormatMedia = {
  0: 'text/plain;charset=utf-8', 16: 'application/cose;cose-type="cose-encrypt0"',
  17: 'application/cose;cose-type="cose-mac0"', 18: 'application/cose;cose-type="cose-sign1"',
  40: 'application/link-format', 41: 'application/xml', 42: 'application/octet-stream', 47: 'application/exi',
  50: 'application/json', 51: 'application/json-patch+json', 52: 'application/merge-patch+json',
  60: 'application/cbor', 61: 'application/cwt', 62: 'application/multipart-core', 63: 'application/cbor-seq',
  110: 'application/senml+json', 111: 'application/sensml+json', 112: 'application/senml+cbor',
  113: 'application/sensml+cbor', 114: 'application/senml-exi', 115: 'application/sensml-exi',
  140: 'application/yang-data+cbor', 256: 'application/coap-group+json', 271: 'application/core-rd+json',
  280: 'application/pkcs7-mime;smime-type=server-generated-key', 284: 'application/pkcs8',
  285: 'application/csrattrs', 286: 'application/pkcs10', 287: 'application/pkix-cert',
  310: 'application/senml+xml', 311: 'application/sensml+xml', 10000: 'application/vnd.ocf+cbor',
};

/**
 * The media type of a Content-Format number, or "Content-Format N" for an unknown one.
 * @param {number} format
 * @returns {string}
 */
export function contentFormatName(format) {
  return contentFormatMedia[format] ?? `Content-Format ${format}`;
}

/**
 * "c.dd" notation of a code: 69 -> "2.05", 1 -> "0.01".
 * @param {number} code
 * @returns {string}
 */
export function codeString(code) {
  return `${code >> 5}.${String(code & 31).padStart(2, '0')}`;
}

/**
 * The name of a code: "GET", "Content", "CSM"; "c.dd" when unknown.
 * @param {number} code
 * @returns {string}
 */
export function codeName(code) {
  return codeNames[code] ?? codeString(code);
}

/**
 * A code from "2.05", a method name ("GET", case-insensitive) or a number.
 * @param {string|number} value
 * @returns {number}
 */
export function parseCode(value) {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 256) return value;
  if (typeof value === 'string') {
    const m = /^([0-7])\.(\d\d)$/.exec(value.trim());
    if (m && Number(m[2]) < 32) return (Number(m[1]) << 5) | Number(m[2]);
    const up = value.trim().toUpperCase();
    const method = { GET: 1, POST: 2, PUT: 3, DELETE: 4, FETCH: 5, PATCH: 6, IPATCH: 7 }[up];
    if (method) return method;
  }
  throw new CoapError(`not a CoAP code: ${String(value)}`);
}

// ---------------------------------------------------------------- errors and bytes

/** Every failure of this module: malformed bytes, timeouts, closed or aborted connections. */
export class CoapError extends Error {
  /**
   * @param {string} message
   * @param {{cause?: any, response?: CoapResponse}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CoapError';
    if (details.response) this.response = details.response;
  }
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Bytes from a string (UTF-8), an ArrayBuffer, a typed array or a node Buffer.
 * @param {string|ArrayBuffer|ArrayBufferView|undefined|null} value
 * @returns {Uint8Array}
 */
export function toBytes(value) {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (typeof value === 'string') return utf8.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new CoapError(`cannot use ${Object.prototype.toString.call(value)} as bytes`);
}

/** @param {Uint8Array} bytes @returns {string} lowercase hex, no separators */
export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** @param {string} hex digits, whitespace ignored @returns {Uint8Array} */
export function fromHex(hex) {
  const d = hex.replace(/\s+/g, '');
  if (d.length % 2 || /[^0-9a-f]/i.test(d)) throw new CoapError(`not hex: ${hex}`);
  const out = new Uint8Array(d.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(d.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equalBytes(a, b) {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- option values

/**
 * Minimal big-endian bytes of an unsigned integer (0 -> no bytes), RFC 7252 §3.2.
 * @param {number} value integer 0 .. 2^32-1
 * @returns {Uint8Array}
 */
export function encodeUint(value) {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new CoapError(`not a uint option value: ${value}`);
  const out = [];
  for (let v = value; v > 0; v = Math.floor(v / 256)) out.unshift(v % 256);
  return Uint8Array.from(out);
}

/**
 * The unsigned integer in big-endian bytes (leading zeros allowed; no bytes -> 0).
 * @param {Uint8Array} bytes at most 4
 * @returns {number}
 */
export function decodeUint(bytes) {
  if (bytes.length > 4) throw new CoapError(`uint option value of ${bytes.length} bytes`);
  let v = 0;
  for (const b of bytes) v = v * 256 + b;
  return v;
}

/**
 * Block1/Block2 value (RFC 7959 §2.2): NUM, M, SZX in 0–3 bytes.
 * @param {{num: number, more?: boolean, szx: number}} block
 * @returns {Uint8Array}
 */
export function encodeBlock({ num, more = false, szx }) {
  if (!Number.isInteger(num) || num < 0 || num >= 1 << 20) throw new CoapError(`block number out of range: ${num}`);
  if (!Number.isInteger(szx) || szx < 0 || szx > 7) throw new CoapError(`block SZX out of range: ${szx}`);
  return encodeUint(num * 16 + (more ? 8 : 0) + szx);
}

/**
 * @param {Uint8Array} bytes
 * @returns {BlockValue}
 */
export function decodeBlock(bytes) {
  if (bytes.length > 3) throw new CoapError(`block option of ${bytes.length} bytes`);
  const v = decodeUint(bytes);
  const szx = v & 7;
  return { num: Math.floor(v / 16), more: (v & 8) !== 0, szx, size: 1 << (Math.min(szx, 6) + 4) };
}

/** Block size in bytes -> SZX (16 -> 0 … 1024 -> 6). */
function szxOf(size) {
  const szx = Math.log2(size) - 4;
  if (!Number.isInteger(szx) || szx < 0 || szx > 6) throw new CoapError(`block size must be a power of two from 16 to 1024: ${size}`);
  return szx;
}

/**
 * Human-readable value of an option for logs: numbers, strings, Block "num/m/size", hex otherwise.
 * @param {number} number
 * @param {Uint8Array} value
 * @param {number} [code] the message's code (for signaling options)
 * @returns {string}
 */
export function formatOptionValue(number, value, code) {
  const format = infoOf(number, code)?.[1] ?? 'opaque';
  try {
    switch (format) {
      case 'empty': return value.length ? toHex(value) : '';
      case 'uint': {
        const n = decodeUint(value);
        return number === Option.CONTENT_FORMAT || number === Option.ACCEPT ? (code >= 224 ? String(n) : shortFormat(n)) : String(n);
      }
      case 'string': return utf8Decoder.decode(value);
      case 'block': { const b = decodeBlock(value); return `${b.num}/${b.more ? 1 : 0}/${b.szx === 7 ? 'BERT' : b.size}`; }
      default: return toHex(value);
    }
  } catch {
    return toHex(value);
  }
}

function shortFormat(n) {
  const m = contentFormatMedia[n];
  return m ? m.replace(/^(text|application)\//, '').replace(/;charset=utf-8$/, '') : String(n);
}

// ---------------------------------------------------------------- codec

function lengthParts(n) {
  if (n < 13) return [n, []];
  if (n < 269) return [13, [n - 13]];
  return [14, [(n - 269) >> 8, (n - 269) & 0xff]];
}

const MAX_EXTENDED = 65535 + 269;

/**
 * Encodes a message in RFC 8323 §4.2 WebSocket framing:
 * `Len=0 | TKL`, Code, TKL extension, Token, Options, 0xFF, Payload. Options are written in
 * ascending number order (stable among equal numbers); an empty payload has no marker.
 * @param {{code: number, token?: Uint8Array, options?: Array<[number, Uint8Array|string|number]>, payload?: Uint8Array|string}} msg
 * @returns {Uint8Array}
 */
export function encodeMessage(msg) {
  const code = msg.code;
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new CoapError(`invalid code: ${code}`);
  const token = toBytes(msg.token);
  if (token.length > MAX_EXTENDED) throw new CoapError(`token of ${token.length} bytes is too long`);
  const options = normalizeOptions(msg.options ?? []);
  const payload = toBytes(msg.payload);
  const [tkl, tkx] = lengthParts(token.length);
  const parts = [Uint8Array.from([tkl, code, ...tkx]), token];
  let prev = 0;
  for (const [number, value] of options) {
    if (!Number.isInteger(number) || number < 0 || number > 65535) throw new CoapError(`invalid option number: ${number}`);
    if (value.length > MAX_EXTENDED) throw new CoapError(`option ${number} value of ${value.length} bytes is too long`);
    const [dn, dx] = lengthParts(number - prev);
    const [ln, lx] = lengthParts(value.length);
    parts.push(Uint8Array.from([(dn << 4) | ln, ...dx, ...lx]), value);
    prev = number;
  }
  if (payload.length) parts.push(Uint8Array.of(0xff), payload);
  return concat(parts);
}

/**
 * Options sorted by number (stable), values as bytes: strings are UTF-8, numbers are uints.
 * @param {Array<[number, Uint8Array|string|number|ArrayBuffer]>} options
 * @returns {OptionList}
 */
export function normalizeOptions(options) {
  return options
    .map(([n, v], i) => [n, typeof v === 'number' ? encodeUint(v) : toBytes(v), i])
    .sort((a, b) => a[0] - b[0] || a[2] - b[2])
    .map(([n, v]) => [n, v]);
}

/**
 * Decodes one WebSocket message. Strict: every malformed input throws a CoapError.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} bytes
 * @param {{maxTokenLength?: number, maxMessageSize?: number}} [limits] maxTokenLength up to 8
 *   (the default) rejects TKL 9–15; above 8 accepts RFC 8974 extended tokens up to that length.
 * @returns {CoapMessage}
 */
export function decodeMessage(bytes, limits = {}) {
  const b = toBytes(bytes);
  const maxTokenLength = limits.maxTokenLength ?? 8;
  if (limits.maxMessageSize !== undefined && b.length > limits.maxMessageSize) {
    throw new CoapError(`message of ${b.length} bytes exceeds the limit of ${limits.maxMessageSize}`);
  }
  let pos = 0;
  const need = (n, what) => { if (pos + n > b.length) throw new CoapError(`message truncated in ${what}`); };
  const ext = (nibble, what) => {
    if (nibble === 13) { need(1, what); return b[pos++] + 13; }
    if (nibble === 14) { need(2, what); const v = (b[pos] << 8) | b[pos + 1]; pos += 2; return v + 269; }
    return nibble;
  };
  need(2, 'header');
  const len = b[0] >> 4;
  if (len !== 0) throw new CoapError(`Len nibble ${len} where WebSocket framing requires 0`);
  const tkl = b[0] & 15;
  const code = b[1];
  pos = 2;
  if (tkl === 15 || (tkl > 8 && maxTokenLength <= 8)) throw new CoapError(`reserved token length nibble ${tkl}`);
  const tokenLength = ext(tkl, 'token length');
  if (tokenLength > Math.max(maxTokenLength, 8)) throw new CoapError(`token of ${tokenLength} bytes exceeds the limit of ${maxTokenLength}`);
  need(tokenLength, 'token');
  const token = b.slice(pos, pos + tokenLength);
  pos += tokenLength;
  /** @type {OptionList} */
  const options = [];
  let number = 0;
  let payload = new Uint8Array(0);
  while (pos < b.length) {
    const h = b[pos++];
    if (h === 0xff) {
      if (pos === b.length) throw new CoapError('payload marker without payload');
      payload = b.slice(pos);
      break;
    }
    if (h >> 4 === 15) throw new CoapError('option delta nibble 15 is reserved');
    if ((h & 15) === 15) throw new CoapError('option length nibble 15 is reserved');
    const delta = ext(h >> 4, 'option delta');
    const length = ext(h & 15, 'option length');
    number += delta;
    if (number > 65535) throw new CoapError('option number exceeds 65535');
    need(length, 'option value');
    options.push([number, b.slice(pos, pos + length)]);
    pos += length;
  }
  return { code, token, options, payload };
}

// ---------------------------------------------------------------- link-format

/**
 * Parses RFC 6690 link-format: `<target>;name=value;name="quoted, value";flag,<...>`.
 * Values keep their text (quotes removed, `\"` unescaped); a parameter without a value is `true`;
 * a repeated parameter keeps its first value. Throws CoapError on text that is not link-format.
 * @param {string} text
 * @returns {Array<{target: string, params: Object<string, string|true>}>}
 */
export function parseLinkFormat(text) {
  const links = [];
  let i = 0;
  const n = text.length;
  const ws = () => { while (i < n && /\s/.test(text[i])) i++; };
  ws();
  if (i === n) return links;
  for (;;) {
    ws();
    if (text[i] !== '<') throw new CoapError(`link-format: expected '<' at ${i}`);
    const end = text.indexOf('>', i + 1);
    if (end < 0) throw new CoapError(`link-format: unterminated target at ${i}`);
    const target = text.slice(i + 1, end);
    i = end + 1;
    /** @type {Object<string, string|true>} */
    const params = {};
    ws();
    while (text[i] === ';') {
      i++;
      ws();
      const m = /^[A-Za-z0-9!#$&+\-.^_`|~*]+/.exec(text.slice(i));
      if (!m) throw new CoapError(`link-format: expected a parameter name at ${i}`);
      const name = m[0];
      i += name.length;
      ws();
      /** @type {string|true} */
      let value = true;
      if (text[i] === '=') {
        i++;
        ws();
        if (text[i] === '"') {
          i++;
          let v = '';
          while (i < n && text[i] !== '"') {
            if (text[i] === '\\' && i + 1 < n) i++;
            v += text[i++];
          }
          if (i >= n) throw new CoapError('link-format: unterminated quoted value');
          i++;
          value = v;
        } else {
          const start = i;
          while (i < n && !/[;,\s]/.test(text[i])) i++;
          value = text.slice(start, i);
        }
      }
      if (!(name in params)) params[name] = value;
      ws();
    }
    links.push({ target, params });
    ws();
    if (i === n) return links;
    if (text[i] !== ',') throw new CoapError(`link-format: expected ',' at ${i}`);
    i++;
  }
}

// ---------------------------------------------------------------- messages for people

/**
 * The path and query of a request's options: "/a/b?x=1&y".
 * @param {OptionList} options
 * @returns {string}
 */
export function requestPath(options) {
  const segs = options.filter(([n]) => n === Option.URI_PATH).map(([, v]) => encodeSegment(utf8Decoder.decode(v)));
  const query = options.filter(([n]) => n === Option.URI_QUERY).map(([, v]) => utf8Decoder.decode(v));
  return '/' + segs.join('/') + (query.length ? '?' + query.join('&') : '');
}

function encodeSegment(s) {
  return s.replace(/[%/?#\s]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

/**
 * One line describing a message: "GET /time token 1a Observe:0",
 * "2.05 Content token 1a Observe:3 Content-Format:plain 8 B".
 * @param {CoapMessage} msg
 * @returns {string}
 */
export function describeMessage(msg) {
  const words = [];
  const req = msg.code >= 1 && msg.code < 32;
  if (req) words.push(codeName(msg.code), requestPath(msg.options));
  else words.push(codeNames[msg.code] ? `${codeString(msg.code)} ${codeNames[msg.code]}` : codeString(msg.code));
  words.push(`token ${msg.token.length ? toHex(msg.token) : '-'}`);
  for (const [number, value] of msg.options) {
    if (req && (number === Option.URI_PATH || number === Option.URI_QUERY)) continue;
    const v = formatOptionValue(number, value, msg.code);
    words.push(v === '' ? optionName(number, msg.code) : `${optionName(number, msg.code)}:${v}`);
  }
  if (msg.payload.length) words.push(`${msg.payload.length} B`);
  return words.join(' ');
}

// ---------------------------------------------------------------- responses and requests

function firstOption(options, number) {
  for (const [n, v] of options) if (n === number) return v;
  return undefined;
}

function uintOption(options, number) {
  const v = firstOption(options, number);
  return v === undefined ? undefined : decodeUint(v);
}

/** A response to one of our requests (block-wise bodies already put together). */
export class CoapResponse {
  /** @param {CoapMessage} msg @param {number} [rtt] */
  constructor(msg, rtt) {
    /** @type {number} */ this.code = msg.code;
    /** @type {string} */ this.codeString = codeString(msg.code);
    /** @type {boolean} */ this.ok = msg.code >> 5 === 2;
    /** @type {OptionList} */ this.options = msg.options;
    /** @type {Uint8Array} */ this.payload = msg.payload;
    /** @type {Uint8Array} */ this.token = msg.token;
    /** @type {number|undefined} */ this.contentFormat = uintOption(msg.options, Option.CONTENT_FORMAT);
    /** @type {number|undefined} empty Observe (allowed over reliable transports) reads as 0 */
    this.observe = uintOption(msg.options, Option.OBSERVE);
    /** @type {Uint8Array|undefined} */ this.etag = firstOption(msg.options, Option.ETAG);
    /** @type {number|undefined} ms from sending the (last) request to this response */ this.rtt = rtt;
  }
  /** "Content", "Not Found" */
  get codeName() { return codeName(this.code); }
  /** First value of an option, or undefined. @param {number} number */
  option(number) { return firstOption(this.options, number); }
  /** Every value of an option. @param {number} number @returns {Uint8Array[]} */
  optionAll(number) { return this.options.filter(([n]) => n === number).map(([, v]) => v); }
  /** Location-Path and Location-Query as "/a/b?c" or undefined. */
  get location() {
    const path = this.optionAll(Option.LOCATION_PATH).map((v) => utf8Decoder.decode(v));
    const query = this.optionAll(Option.LOCATION_QUERY).map((v) => utf8Decoder.decode(v));
    if (!path.length && !query.length) return undefined;
    return '/' + path.join('/') + (query.length ? '?' + query.join('&') : '');
  }
  /** The payload as UTF-8 text. */
  text() { return utf8Decoder.decode(this.payload); }
  /** The payload parsed as JSON. */
  json() { return JSON.parse(this.text()); }
}

/**
 * @typedef {object} IncomingRequest a request the peer sent us
 * @property {string} method "GET", "POST", … ("0.08" for an unknown method)
 * @property {number} code
 * @property {string} path "/whoami" (Uri-Path, percent-decoded segments joined by "/")
 * @property {string[]} query Uri-Query values
 * @property {OptionList} options
 * @property {Uint8Array} payload
 * @property {Uint8Array} token
 * @property {number|undefined} contentFormat
 * @property {number|undefined} accept
 * @property {number|undefined} observe
 * @property {() => string} text
 * @property {() => any} json
 */

/**
 * @typedef {object} HandlerReply what a handler returns (undefined means 2.05, empty)
 * @property {string|number} [code] "2.05" or 69 (default 2.05)
 * @property {string|Uint8Array} [payload]
 * @property {number} [contentFormat]
 * @property {Array<[number, Uint8Array|string|number]>} [options]
 */

function incomingRequest(msg) {
  const segs = msg.options.filter(([n]) => n === Option.URI_PATH).map(([, v]) => utf8Decoder.decode(v));
  const payload = msg.payload;
  return {
    method: codeNames[msg.code] && msg.code < 8 ? (msg.code === 7 ? 'IPATCH' : codeNames[msg.code]) : codeString(msg.code),
    code: msg.code,
    path: '/' + segs.join('/'),
    query: msg.options.filter(([n]) => n === Option.URI_QUERY).map(([, v]) => utf8Decoder.decode(v)),
    options: msg.options,
    payload,
    token: msg.token,
    contentFormat: uintOption(msg.options, Option.CONTENT_FORMAT),
    accept: uintOption(msg.options, Option.ACCEPT),
    observe: uintOption(msg.options, Option.OBSERVE),
    text: () => utf8Decoder.decode(payload),
    json: () => JSON.parse(utf8Decoder.decode(payload)),
  };
}

// Options a block-wise follow-up request must not copy from the original.
const perRequestOptions = new Set([Option.BLOCK1, Option.BLOCK2, Option.SIZE1, Option.SIZE2, Option.OBSERVE, Option.REQUEST_TAG]);

/**
 * Request options from a path ("/a/b?x=1", or an absolute URI sent as Proxy-Uri) and a query list.
 * @returns {OptionList}
 */
function pathOptions(path, query) {
  const out = [];
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path)) {
    out.push([Option.PROXY_URI, utf8.encode(path)]);
  } else {
    const q = path.indexOf('?');
    const p = q >= 0 ? path.slice(0, q) : path;
    for (const seg of p.split('/')) {
      if (seg === '') continue;
      let s = seg;
      try { s = decodeURIComponent(seg); } catch { /* keep it raw */ }
      out.push([Option.URI_PATH, utf8.encode(s)]);
    }
    if (q >= 0) for (const item of path.slice(q + 1).split('&')) if (item !== '') out.push([Option.URI_QUERY, utf8.encode(item)]);
  }
  const items = Array.isArray(query) ? query : Object.entries(query ?? {}).map(([k, v]) => (v === true ? k : `${k}=${v}`));
  for (const item of items) out.push([Option.URI_QUERY, utf8.encode(String(item))]);
  return out;
}

// ---------------------------------------------------------------- observation

/**
 * An observation: an async iterable of responses (the first is the registration's response).
 * It ends when the server ends it (a non-2.xx response or one without Observe), when it is
 * cancelled, or when the connection closes.
 */
export class CoapObservation {
  constructor(conn, token, request) {
    this._conn = conn;
    /** @type {Uint8Array} */ this.token = token;
    this._request = request; // {code, options} of the registration, for deregistration
    this._queue = [];
    this._waiters = [];
    this._done = false;
    this._cancelling = null;
    /** @type {string} */ this.path = requestPath(request.options);
    /** Resolves with the registration's response (or rejects if it fails). */
    this.first = new Promise((resolve, reject) => { this._first = { resolve, reject }; });
    this.first.catch(() => {});
  }
  _push(item) {
    if (this._done || (this._cancelling && item.response)) return;
    const w = this._waiters.shift();
    if (w) w(item);
    else this._queue.push(item);
  }
  _end(error) {
    if (this._done) return;
    this._first?.reject(error ?? new CoapError('observation ended before its first response'));
    this._push(error ? { error } : { done: true });
    this._done = true;
    for (const w of this._waiters.splice(0)) w({ done: true });
  }
  /** @returns {Promise<IteratorResult<CoapResponse>>} */
  next() {
    const item = this._queue.length ? this._queue.shift() : this._done ? { done: true } : null;
    const settle = (it) => {
      if (it.error) { this._queue.length = 0; return Promise.reject(it.error); }
      if (it.done) return { done: true, value: undefined };
      return { done: false, value: it.response };
    };
    if (item) return Promise.resolve(settle(item));
    return new Promise((resolve) => this._waiters.push(resolve)).then(settle);
  }
  /** Called when `for await` is left early: deregisters. */
  async return() {
    try { await this.cancel(); } catch { /* the connection may be gone */ }
    return { done: true, value: undefined };
  }
  [Symbol.asyncIterator]() { return this; }
  /**
   * Deregisters (GET with Observe=1 on the same token and options) and resolves with the
   * server's answer to it; ends the iteration at once (notifications not yet taken by next()
   * are dropped). Resolves undefined if the observation had already ended.
   * @param {{timeout?: number}} [opts]
   * @returns {Promise<CoapResponse|undefined>}
   */
  cancel(opts = {}) {
    if (this._cancelling) return this._cancelling;
    if (this._done) return Promise.resolve(undefined);
    this._queue = this._queue.filter((it) => !it.response);
    this._cancelling = this._conn._deregister(this, opts.timeout);
    return this._cancelling;
  }
}

// ---------------------------------------------------------------- connection

/**
 * Maps a CoAP or WebSocket URL to the WebSocket URL to open.
 * coap+ws://H[:P]/… -> ws://H[:P]/.well-known/coap (default port 80), coaps+ws -> wss (443);
 * ws:// and wss:// are used as given, except that an empty path means /.well-known/coap.
 * @param {string} url
 * @returns {string}
 */
export function websocketUrl(url) {
  const m = /^(coap\+ws|coaps\+ws|ws|wss):\/\/([^/?#]*)([^?#]*)(\?[^#]*)?/i.exec(url);
  if (!m) throw new CoapError(`not a coap+ws, coaps+ws, ws or wss URL: ${url}`);
  const scheme = m[1].toLowerCase();
  const authority = m[2];
  if (!authority) throw new CoapError(`no host in ${url}`);
  if (scheme === 'coap+ws') return `ws://${authority}/.well-known/coap`;
  if (scheme === 'coaps+ws') return `wss://${authority}/.well-known/coap`;
  const path = m[3] && m[3] !== '/' ? m[3] : '/.well-known/coap';
  return `${scheme}://${authority}${path}${m[4] ?? ''}`;
}

const now = () => (globalThis.performance ? globalThis.performance.now() : Date.now());

/**
 * Opens a CoAP over WebSocket connection: subprotocol "coap", sends our CSM (Max-Message-Size,
 * Block-Wise-Transfer) at once, resolves when the peer's CSM has arrived (bounded by timeout).
 * @param {string} url coap+ws://, coaps+ws://, ws:// or wss://
 * @param {{handler?: (req: IncomingRequest) => (HandlerReply|undefined|Promise<HandlerReply|undefined>),
 *   timeout?: number, maxMessageSize?: number, onLog?: (entry: LogEntry) => void, WebSocket?: any}} [opts]
 * @returns {Promise<CoapConnection>}
 */
export async function connect(url, opts = {}) {
  const conn = new CoapConnection(url, opts);
  await conn._opened;
  return conn;
}

/**
 * @typedef {object} LogEntry
 * @property {number} time ms since connect
 * @property {'out'|'in'} direction
 * @property {'request'|'response'|'signal'} kind (the Empty message 0.00 counts as a signal)
 * @property {string} summary e.g. "GET /time token 1a Observe:0"
 * @property {number} bytes encoded size
 * @property {number} [rtt] for responses to our requests: ms since the request was sent
 * @property {CoapMessage} message the message itself
 */

/** One CoAP over WebSocket connection; make it with connect(). */
export class CoapConnection {
  constructor(url, opts) {
    const WS = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') throw new CoapError('no WebSocket: pass opts.WebSocket (e.g. the "ws" package) where there is no global WebSocket');
    /** @type {string} the WebSocket URL in use */ this.url = websocketUrl(url);
    this.timeout = opts.timeout ?? 30000;
    this.maxMessageSize = opts.maxMessageSize ?? 1 << 20;
    /** Settings from the peer's CSM (base values until it arrives). */
    this.peer = { maxMessageSize: 1152, blockWiseTransfer: false };
    this._onLog = opts.onLog;
    this._handler = opts.handler ?? null;
    this._start = now();
    this._nextToken = 1;
    this._pending = new Map(); // token hex -> {onMessage(msg), fail(err), sent}
    this._observations = new Set();
    this._inFlight = new Set(); // promises of requests we are answering
    this._uploads = new Map(); // Block1 uploads to our handler: key -> {parts, next}
    this._csmSeen = false;
    this._released = false;
    this._isClosed = false;
    let resolveClosed;
    /** @type {Promise<{code: number, reason: string}>} */
    this.closed = new Promise((r) => { resolveClosed = r; });
    this._resolveClosed = resolveClosed;

    this._opened = new Promise((resolve, reject) => {
      const fail = (err) => { reject(err); };
      this._openFail = fail;
      this._openOk = resolve;
    });
    this._opened.catch(() => {});
    this._csmTimer = setTimeout(() => {
      this._openFail(new CoapError(`timeout: no CSM from ${this.url} within ${this.timeout} ms`));
      this.abort('No CSM received');
    }, this.timeout);

    let ws;
    try {
      ws = new WS(this.url, 'coap');
    } catch (e) {
      clearTimeout(this._csmTimer);
      throw new CoapError(`cannot open ${this.url}: ${e.message}`, { cause: e });
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (ws.protocol !== 'coap') {
        this._openFail(new CoapError(`server did not select the "coap" subprotocol (got "${ws.protocol}")`));
        this._closeSocket(1002, 'subprotocol');
        return;
      }
      const csm = [[SignalOption.MAX_MESSAGE_SIZE, encodeUint(this.maxMessageSize)], [SignalOption.BLOCK_WISE_TRANSFER, new Uint8Array(0)]];
      this._send({ code: Code.CSM, token: new Uint8Array(0), options: csm, payload: new Uint8Array(0) });
    };
    ws.onmessage = (ev) => this._receive(ev.data);
    ws.onerror = (ev) => {
      if (!this._csmSeen) this._openFail(new CoapError(`cannot connect to ${this.url}${ev?.message ? ': ' + ev.message : ''}`));
    };
    ws.onclose = (ev) => this._closedBySocket(ev?.code ?? 1006, ev?.reason ?? '');
  }

  _log(direction, msg, bytes, rtt) {
    if (!this._onLog) return;
    const kind = msg.code >= 1 && msg.code < 32 ? 'request' : msg.code >= 64 && msg.code < 224 ? 'response' : 'signal';
    /** @type {LogEntry} */
    const entry = { time: Math.round((now() - this._start) * 10) / 10, direction, kind, summary: describeMessage(msg), bytes, message: msg };
    if (rtt !== undefined) entry.rtt = Math.round(rtt * 10) / 10;
    try { this._onLog(entry); } catch { /* a logger's fault is not ours */ }
  }

  _send(msg) {
    if (this._isClosed) throw new CoapError('connection closed');
    const bytes = encodeMessage(msg);
    if (msg.code < 224 && bytes.length > this.peer.maxMessageSize) {
      throw new CoapError(`message of ${bytes.length} bytes exceeds the peer's Max-Message-Size ${this.peer.maxMessageSize}`);
    }
    this._ws.send(bytes);
    this._log('out', msg, bytes.length);
  }

  _newToken() {
    const t = encodeUint(this._nextToken++);
    return t.length ? t : Uint8Array.of(0);
  }

  _receive(data) {
    if (this._isClosed) return;
    if (typeof data === 'string') {
      this.abort('Text frame received');
      return;
    }
    let bytes;
    try { bytes = toBytes(data); } catch { this.abort('Unsupported frame data'); return; }
    if (bytes.length > this.maxMessageSize) {
      this.abort(`Message of ${bytes.length} bytes exceeds Max-Message-Size ${this.maxMessageSize}`);
      return;
    }
    let msg;
    try {
      msg = decodeMessage(bytes);
    } catch (e) {
      this.abort(`Malformed message: ${e.message}`);
      return;
    }
    const pending = msg.code >= 64 && msg.code < 192 ? this._pending.get(toHex(msg.token)) : undefined;
    this._log('in', msg, bytes.length, pending?.sent !== undefined ? now() - pending.sent : undefined);
    if (!this._csmSeen && msg.code !== Code.CSM) {
      this.abort('No CSM received');
      return;
    }
    if (msg.code === 0) return; // Empty: ignored (RFC 8323 §5.4 note)
    if (msg.code >= 224) { this._signal(msg); return; }
    if (msg.code >= 1 && msg.code < 32) { this._serveRequest(msg); return; }
    if (msg.code >= 64 && msg.code < 192) {
      if (pending) pending.onMessage(msg);
      return; // a response nobody waits for (late, or to a cancelled request): dropped
    }
    // 1.xx and 6.xx are reserved: nothing to do with them but ignore
  }

  _signal(msg) {
    switch (msg.code) {
      case Code.CSM: {
        for (const [n, v] of msg.options) {
          if (n === SignalOption.MAX_MESSAGE_SIZE) this.peer.maxMessageSize = decodeUint(v);
          else if (n === SignalOption.BLOCK_WISE_TRANSFER) this.peer.blockWiseTransfer = true;
          else if (n % 2 === 1) {
            this.abort('Unknown critical CSM option', n);
            return;
          }
        }
        if (!this._csmSeen) {
          this._csmSeen = true;
          clearTimeout(this._csmTimer);
          this._openOk();
        }
        return;
      }
      case Code.PING: {
        const custody = msg.options.some(([n]) => n === SignalOption.CUSTODY);
        const pong = () => { if (!this._isClosed) this._send({ code: Code.PONG, token: msg.token, options: [], payload: new Uint8Array(0) }); };
        if (custody && this._inFlight.size) Promise.allSettled([...this._inFlight]).then(pong);
        else pong();
        return;
      }
      case Code.PONG: {
        const p = this._pending.get('ping:' + toHex(msg.token));
        if (p) p.onMessage(msg);
        return;
      }
      case Code.RELEASE:
        this._peerReleased();
        return;
      case Code.ABORT: {
        const diag = utf8Decoder.decode(msg.payload);
        this._fail(new CoapError(`aborted by the peer${diag ? ': ' + diag : ''}`));
        this._closeSocket(1000, 'abort');
        return;
      }
      default: // unassigned 7.xx
        this.abort(`Unknown signal ${codeString(msg.code)}`);
    }
  }

  async _peerReleased() {
    this._released = true;
    // Finish what we are answering and what we asked, bounded; then close.
    const ours = [...this._pending.values()].filter((p) => p.request).map((p) => p.done);
    await Promise.race([
      Promise.allSettled([...this._inFlight, ...ours]),
      new Promise((r) => setTimeout(r, Math.min(this.timeout, 5000))),
    ]);
    this._closeSocket(1000, 'released');
  }

  // ------------------------------------------------ the server side (role reversal)

  /**
   * Sets or replaces the handler of requests the peer sends us; null removes it (5.01 then).
   * @param {((req: IncomingRequest) => any)|null} handler
   */
  serve(handler) {
    this._handler = handler ?? null;
  }

  _serveRequest(msg) {
    const work = this._answer(msg).catch((e) => {
      try {
        if (!this._isClosed) this._send({ code: Code.INTERNAL_SERVER_ERROR, token: msg.token, options: [], payload: utf8.encode(String(e?.message ?? e)) });
      } catch { /* nothing more to do */ }
    });
    this._inFlight.add(work);
    work.finally(() => this._inFlight.delete(work));
  }

  async _answer(msg) {
    const reply = (code, payload = new Uint8Array(0), options = []) => {
      if (!this._isClosed) this._send({ code, token: msg.token, options, payload });
    };
    const diagnostic = (code, text) => reply(code, utf8.encode(text));
    for (const [n] of msg.options) {
      if (n % 2 === 1 && !optionInfo[n]) return diagnostic(130, `Unknown critical option ${n}`);
    }
    const block2 = firstOption(msg.options, Option.BLOCK2);
    const block1 = firstOption(msg.options, Option.BLOCK1);
    let req = msg;
    if (block1 !== undefined) {
      // Put a Block1 upload together before the handler sees it.
      const b = decodeBlock(block1);
      const tag = msg.options.filter(([n]) => n === Option.REQUEST_TAG).map(([, v]) => toHex(v)).join(',');
      const key = `${msg.code} ${requestPath(msg.options)} ${tag}`;
      const unit = b.szx === 7 ? 1024 : b.size;
      const offset = b.num * unit;
      let up = this._uploads.get(key);
      if (b.num === 0) { up = { parts: [], next: 0 }; this._uploads.set(key, up); }
      if (!up || offset !== up.next) return diagnostic(136, 'Block1 out of order');
      up.parts.push(msg.payload);
      up.next += msg.payload.length;
      if (up.next > this.maxMessageSize * 16) { this._uploads.delete(key); return reply(141); }
      if (b.more) return reply(Code.CONTINUE, undefined, [[Option.BLOCK1, encodeBlock({ num: b.num, more: true, szx: b.szx })]]);
      this._uploads.delete(key);
      req = { ...msg, options: msg.options.filter(([n]) => n !== Option.BLOCK1 && n !== Option.SIZE1 && n !== Option.REQUEST_TAG), payload: concat(up.parts) };
    }
    if (!this._handler) return diagnostic(Code.NOT_IMPLEMENTED, 'This client serves no resources');
    let result;
    try {
      result = (await this._handler(incomingRequest({ ...req, options: req.options.filter(([n]) => n !== Option.BLOCK2) }))) ?? {};
    } catch (e) {
      return diagnostic(Code.INTERNAL_SERVER_ERROR, String(e?.message ?? e));
    }
    let code, payload, options;
    try {
      code = result.code === undefined ? Code.CONTENT : parseCode(result.code);
      payload = toBytes(result.payload);
      options = normalizeOptions(result.options ?? []);
      if (result.contentFormat !== undefined) options = normalizeOptions([...options.filter(([n]) => n !== Option.CONTENT_FORMAT), [Option.CONTENT_FORMAT, result.contentFormat]]);
    } catch (e) {
      return diagnostic(Code.INTERNAL_SERVER_ERROR, `bad handler reply: ${e.message}`);
    }
    if (block1 !== undefined) options = normalizeOptions([...options, [Option.BLOCK1, encodeBlock({ ...decodeBlock(block1), more: false })]]);
    // Block2: answer the block asked for, or cut a reply too large for the peer.
    const whole = encodeMessage({ code, token: msg.token, options, payload }).length;
    if (block2 !== undefined || whole > this.peer.maxMessageSize) {
      const asked = block2 !== undefined ? decodeBlock(block2) : { num: 0, szx: 6, size: 1024 };
      let szx = Math.min(asked.szx, 6);
      while (szx > 0 && (1 << (szx + 4)) + whole - payload.length + 16 > this.peer.maxMessageSize) szx--;
      const size = 1 << (szx + 4);
      const start = asked.num * (asked.szx === 7 ? 1024 : asked.size);
      if (start > payload.length || (start === payload.length && start > 0)) return diagnostic(Code.BAD_OPTION, 'Block2 beyond the end');
      const num = start / size;
      const piece = payload.subarray(start, start + size);
      const more = start + size < payload.length;
      options = normalizeOptions([...options, [Option.BLOCK2, encodeBlock({ num, more, szx })], ...(num === 0 ? [[Option.SIZE2, payload.length]] : [])]);
      return reply(code, piece, options);
    }
    return reply(code, payload, options);
  }

  // ------------------------------------------------ the client side

  /**
   * Sends one message and waits for the response with its token.
   * @returns {Promise<{msg: CoapMessage, rtt: number}>}
   */
  _exchange(code, options, payload, timeout) {
    if (this._isClosed) return Promise.reject(new CoapError('connection closed'));
    if (this._released) return Promise.reject(new CoapError('connection released: no new requests'));
    const token = this._newToken();
    const key = toHex(token);
    let entry;
    const done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this._pending.delete(key); reject(new CoapError('timeout')); }, timeout ?? this.timeout);
      entry = {
        request: true,
        sent: now(),
        onMessage: (msg) => { clearTimeout(timer); this._pending.delete(key); resolve({ msg, rtt: now() - entry.sent }); },
        fail: (err) => { clearTimeout(timer); this._pending.delete(key); reject(err); },
      };
    });
    entry.done = done;
    this._pending.set(key, entry);
    try {
      this._send({ code, token, options, payload });
    } catch (e) {
      entry.fail(e);
    }
    return done;
  }

  /** The largest block payload (and SZX) that fits a message with these options. */
  _blockFit(code, options, wanted) {
    const overhead = encodeMessage({ code, token: Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0), options: [...options, [Option.BLOCK1, Uint8Array.of(0, 0, 0)], [Option.SIZE1, Uint8Array.of(0, 0, 0, 0)], [Option.REQUEST_TAG, new Uint8Array(8)]], payload: Uint8Array.of(0) }).length;
    const room = this.peer.maxMessageSize - overhead;
    if (wanted === undefined && this.peer.blockWiseTransfer && this.peer.maxMessageSize > 1152 && room >= 2048) {
      return { szx: 7, size: Math.floor(room / 1024) * 1024 };
    }
    let szx = wanted === undefined ? 6 : szxOf(wanted);
    while (szx > 0 && 1 << (szx + 4) > room) szx--;
    if (1 << (szx + 4) > room) throw new CoapError(`options leave no room for a block within the peer's Max-Message-Size ${this.peer.maxMessageSize}`);
    return { szx, size: 1 << (szx + 4) };
  }

  /**
   * Sends a request; block-wise both ways as needed; resolves with the response (any code).
   * @param {{method?: string|number, path?: string, query?: string[]|Object<string,string|true>,
   *   options?: Array<[number, Uint8Array|string|number]>, payload?: string|Uint8Array,
   *   contentFormat?: number, accept?: number, timeout?: number, blockSize?: number}} [req]
   *   blockSize (16…1024) asks for blocks of that size both ways: Block1 pieces of it for a
   *   larger payload, and a Block2 of it in the first request (late negotiation otherwise).
   * @returns {Promise<CoapResponse>}
   */
  async request(req = {}) {
    const { code, options } = this._requestOptions(req);
    const payload = toBytes(req.payload);
    return this._fullRequest(code, options, payload, req.timeout, req.blockSize);
  }

  _requestOptions(req) {
    const code = parseCode(req.method ?? 'GET');
    if (code < 1 || code >= 32) throw new CoapError(`not a method: ${req.method}`);
    const opts = [...pathOptions(req.path ?? '/', req.query ?? []), ...(req.options ?? [])];
    if (req.contentFormat !== undefined) opts.push([Option.CONTENT_FORMAT, req.contentFormat]);
    if (req.accept !== undefined) opts.push([Option.ACCEPT, req.accept]);
    return { code, options: normalizeOptions(opts) };
  }

  async _fullRequest(code, options, payload, timeout, blockSize) {
    let first;
    const wholeSize = encodeMessage({ code, token: new Uint8Array(8), options, payload }).length;
    const wantBlock2 = blockSize !== undefined && !options.some(([n]) => n === Option.BLOCK2) ? [[Option.BLOCK2, encodeBlock({ num: 0, szx: szxOf(blockSize) })]] : [];
    if (wholeSize <= this.peer.maxMessageSize && (blockSize === undefined || payload.length <= blockSize)) {
      first = await this._exchange(code, normalizeOptions([...options, ...wantBlock2]), payload, timeout);
    } else {
      first = await this._upload(code, options, payload, timeout, blockSize, wantBlock2);
    }
    return this._followBlock2(code, options, first, timeout, payload);
  }

  /** Block1 upload (RFC 7959 §2.5, BERT per RFC 8323 §6); resolves with the final response. */
  async _upload(code, options, payload, timeout, blockSize, wantBlock2) {
    let { szx, size } = this._blockFit(code, options, blockSize);
    const tag = crypto.getRandomValues(new Uint8Array(4));
    let offset = 0;
    for (;;) {
      const unit = szx === 7 ? 1024 : size;
      if (offset % unit) throw new CoapError('block-wise upload: server asked for a block size that does not divide what was sent');
      const piece = payload.subarray(offset, offset + size);
      const more = offset + piece.length < payload.length;
      const opts = [...options, [Option.BLOCK1, encodeBlock({ num: offset / unit, more, szx })], [Option.REQUEST_TAG, tag]];
      if (offset === 0) opts.push([Option.SIZE1, payload.length]);
      if (!more) opts.push(...wantBlock2);
      const res = await this._exchange(code, normalizeOptions(opts), piece, timeout);
      offset += piece.length;
      const ack = firstOption(res.msg.options, Option.BLOCK1);
      // The last block's answer is the response; so is anything but 2.31 before it (an error,
      // or a success from a server that took what it needed, RFC 7959 §2.3).
      if (!more || res.msg.code !== Code.CONTINUE) return res;
      if (ack !== undefined) {
        const b = decodeBlock(ack);
        if (b.szx < szx) { szx = b.szx; size = b.size; } // the server wants smaller blocks
        else if (szx === 7 && b.szx !== 7) { szx = Math.min(b.szx, 6); size = 1 << (szx + 4); }
      }
    }
  }

  /** Follows Block2 (RFC 7959 §2.4) from a first response; checks the ETag of every block. */
  async _followBlock2(code, options, first, timeout, payload) {
    let { msg, rtt } = first;
    let b2 = firstOption(msg.options, Option.BLOCK2);
    if (b2 === undefined) return new CoapResponse(msg, rtt);
    let b = decodeBlock(b2);
    if (b.num !== 0) throw new CoapError(`block-wise response started at block ${b.num}`);
    if (!b.more) return new CoapResponse({ ...msg, options: msg.options.filter(([n]) => n !== Option.BLOCK2) }, rtt);
    const etag = firstOption(msg.options, Option.ETAG);
    const parts = [msg.payload];
    let received = msg.payload.length;
    const base = options.filter(([n]) => !perRequestOptions.has(n));
    const limit = Math.max(this.maxMessageSize, 16 << 20);
    while (b.more) {
      if (received > limit * 4) throw new CoapError('block-wise response too large');
      const szx = b.szx;
      const unit = szx === 7 ? 1024 : b.size;
      if (received % unit) throw new CoapError('block-wise response: block size does not divide what was received');
      // Later blocks: the same request with Block2 (RFC 7959 §2.4); FETCH repeats its body,
      // other methods with a body (POST, PUT, …) ask without it (RFC 7959 §2.6).
      const body = code === Code.FETCH ? toBytes(payload) : new Uint8Array(0);
      const res = await this._exchange(code, normalizeOptions([...base, [Option.BLOCK2, encodeBlock({ num: received / unit, szx })]]), body, timeout);
      rtt = res.rtt;
      if (res.msg.code >> 5 !== 2) return new CoapResponse(res.msg, rtt);
      const nb = firstOption(res.msg.options, Option.BLOCK2);
      if (nb === undefined) throw new CoapError('block-wise response: a later block has no Block2');
      b = decodeBlock(nb);
      const start = b.num * (b.szx === 7 ? 1024 : b.size);
      if (start !== received) throw new CoapError(`block-wise response: block starts at ${start}, expected ${received}`);
      if (!equalBytes(firstOption(res.msg.options, Option.ETAG), etag)) throw new CoapError('block-wise response: the representation changed during the transfer (ETag)');
      parts.push(res.msg.payload);
      received += res.msg.payload.length;
      if (res.msg.payload.length === 0 && b.more) throw new CoapError('block-wise response: empty block with more to come');
    }
    return new CoapResponse({ ...msg, options: msg.options.filter(([n]) => n !== Option.BLOCK2), payload: concat(parts) }, rtt);
  }

  /** GET. @param {string} path @param {object} [opts] request() options */
  get(path, opts = {}) { return this.request({ ...opts, method: 'GET', path }); }
  /** POST. @param {string} path @param {string|Uint8Array} [payload] @param {object} [opts] */
  post(path, payload, opts = {}) { return this.request({ ...opts, method: 'POST', path, payload }); }
  /** PUT. @param {string} path @param {string|Uint8Array} [payload] @param {object} [opts] */
  put(path, payload, opts = {}) { return this.request({ ...opts, method: 'PUT', path, payload }); }
  /** DELETE. @param {string} path @param {object} [opts] */
  delete(path, opts = {}) { return this.request({ ...opts, method: 'DELETE', path }); }
  /** FETCH. @param {string} path @param {string|Uint8Array} [payload] @param {object} [opts] */
  fetch(path, payload, opts = {}) { return this.request({ ...opts, method: 'FETCH', path, payload }); }
  /** PATCH. */
  patch(path, payload, opts = {}) { return this.request({ ...opts, method: 'PATCH', path, payload }); }
  /** iPATCH. */
  ipatch(path, payload, opts = {}) { return this.request({ ...opts, method: 'IPATCH', path, payload }); }

  /**
   * Observes a resource (GET with Observe=0).
   * @param {string} path
   * @param {object} [opts] request() options (method GET unless FETCH is given)
   * @returns {CoapObservation}
   */
  observe(path, opts = {}) {
    const { code, options: base } = this._requestOptions({ ...opts, method: opts.method ?? 'GET', path });
    const options = normalizeOptions([...base.filter(([n]) => n !== Option.OBSERVE), [Option.OBSERVE, 0]]);
    const token = this._newToken();
    const key = toHex(token);
    const obs = new CoapObservation(this, token, { code, options, payload: toBytes(opts.payload) });
    const timeout = opts.timeout ?? this.timeout;
    let chain = Promise.resolve();
    let gotFirst = false;
    const regTimer = setTimeout(() => { if (!gotFirst) { this._pending.delete(key); this._observations.delete(obs); obs._end(new CoapError('timeout')); } }, timeout);
    const entry = {
      request: false,
      sent: now(),
      onMessage: (msg) => {
        const rtt = gotFirst ? undefined : now() - entry.sent;
        const isFirst = !gotFirst;
        gotFirst = true;
        entry.sent = undefined; // notifications have no round trip (until a deregistration)
        clearTimeout(regTimer);
        const final = msg.code >> 5 !== 2 || firstOption(msg.options, Option.OBSERVE) === undefined;
        if (obs._cancelling && !final) return; // a notification racing our deregistration
        if (final) { this._pending.delete(key); this._observations.delete(obs); }
        chain = chain.then(async () => {
          let res;
          try {
            res = await this._followBlock2(code, base, { msg, rtt }, timeout, obs._request.payload);
          } catch (e) {
            if (isFirst) { obs._end(e); return; }
            return; // a notification we could not put together: wait for the next one
          }
          if (obs._cancelling) { if (final) obs._deregistered?.(res); return; }
          if (isFirst) obs._first.resolve(res);
          obs._push({ response: res });
          if (final) obs._end();
        });
      },
      fail: (err) => { clearTimeout(regTimer); this._pending.delete(key); this._observations.delete(obs); obs._deregistered?.(undefined, err); obs._end(gotFirst ? undefined : err); },
    };
    this._pending.set(key, entry);
    this._observations.add(obs);
    try {
      this._send({ code, token, options, payload: obs._request.payload });
    } catch (e) {
      entry.fail(e);
    }
    return obs;
  }

  _deregister(obs, timeout) {
    const key = toHex(obs.token);
    const result = new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this._pending.delete(key); this._observations.delete(obs); obs._end(); reject(new CoapError('timeout')); }, timeout ?? this.timeout);
      obs._deregistered = (res, err) => { clearTimeout(timer); obs._end(); if (err) reject(err); else resolve(res); };
    });
    if (!this._pending.has(key)) { obs._deregistered(undefined); return result; }
    const options = normalizeOptions([...obs._request.options.filter(([n]) => n !== Option.OBSERVE), [Option.OBSERVE, 1]]);
    this._pending.get(key).sent = now();
    try {
      this._send({ code: obs._request.code, token: obs.token, options, payload: obs._request.payload });
    } catch (e) {
      obs._deregistered(undefined, e);
    }
    return result;
  }

  /**
   * CoAP Ping (7.02); resolves with the round-trip time in ms when the Pong arrives.
   * @param {{timeout?: number, custody?: boolean}} [opts]
   * @returns {Promise<number>}
   */
  ping(opts = {}) {
    if (this._isClosed) return Promise.reject(new CoapError('connection closed'));
    const token = this._newToken();
    const key = 'ping:' + toHex(token);
    const sent = now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this._pending.delete(key); reject(new CoapError('timeout')); }, opts.timeout ?? this.timeout);
      this._pending.set(key, {
        request: false,
        sent,
        onMessage: () => { clearTimeout(timer); this._pending.delete(key); resolve(now() - sent); },
        fail: (e) => { clearTimeout(timer); this._pending.delete(key); reject(e); },
      });
      try {
        this._send({ code: Code.PING, token, options: opts.custody ? [[SignalOption.CUSTODY, new Uint8Array(0)]] : [], payload: new Uint8Array(0) });
      } catch (e) {
        this._pending.get(key)?.fail(e);
      }
    });
  }

  /**
   * Release (7.04): we send no more requests; then the connection is closed.
   * @param {{holdOff?: number}} [opts] Hold-Off seconds to announce
   * @returns {Promise<{code: number, reason: string}>} when closed
   */
  async release(opts = {}) {
    if (!this._isClosed) {
      this._released = true;
      const options = opts.holdOff !== undefined ? [[SignalOption.HOLD_OFF, encodeUint(opts.holdOff)]] : [];
      this._send({ code: Code.RELEASE, token: new Uint8Array(0), options, payload: new Uint8Array(0) });
      this._closeSocket(1000, 'released');
    }
    return this.closed;
  }

  /**
   * Abort (7.05) with a diagnostic, then close; every pending request fails.
   * @param {string} [diagnostic]
   */
  abort(diagnostic = '', badCsmOption) {
    if (this._isClosed) return;
    try {
      const options = badCsmOption !== undefined ? [[SignalOption.BAD_CSM_OPTION, encodeUint(badCsmOption)]] : [];
      this._send({ code: Code.ABORT, token: new Uint8Array(0), options, payload: utf8.encode(diagnostic) });
    } catch { /* the socket may be gone already */ }
    this._fail(new CoapError(`aborted${diagnostic ? ': ' + diagnostic : ''}`));
    this._closeSocket(1000, 'abort');
  }

  /** Closes the WebSocket; every pending request fails with CoapError. */
  close() {
    this._closeSocket(1000, '');
  }

  _closeSocket(code, reason) {
    const ws = this._ws;
    // The WebSocket API lets scripts close with 1000 or 3000–4999 only (not 1002, 1003, 1007):
    // an Abort's diagnostic says what went wrong.
    if (code !== 1000 && (code < 3000 || code > 4999)) code = 1000;
    this._fail(new CoapError(`connection closed${reason ? ' (' + reason + ')' : ''}`));
    try { ws.close(code, reason); } catch { try { ws.close(); } catch { /* already closed */ } }
    // Some servers never answer the closing handshake: do not wait for them forever.
    setTimeout(() => this._closedBySocket(code, reason), 2000).unref?.();
  }

  _closedBySocket(code, reason) {
    this._fail(new CoapError(`connection closed${code !== 1000 ? ` (WebSocket code ${code}${reason ? ', ' + reason : ''})` : ''}`));
    this._resolveClosed({ code, reason });
  }

  _fail(err) {
    const first = !this._isClosed;
    this._isClosed = true;
    clearTimeout(this._csmTimer);
    if (first) this._openFail?.(err);
    for (const p of [...this._pending.values()]) p.fail(err);
    this._pending.clear();
    for (const o of [...this._observations]) o._end();
    this._observations.clear();
  }
}
