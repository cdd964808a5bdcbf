// A small CBOR (RFC 8949) decoder that renders diagnostic notation (RFC 8949 §8), for the console's
// payload view. No dependencies; decoding errors throw with the offset where they happened.

class CborReader {
  constructor(bytes) {
    this.b = bytes;
    this.i = 0;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n) {
    if (this.i + n > this.b.length) throw new Error(`CBOR: truncated at byte ${this.i}`);
  }
  u8() { this.need(1); return this.b[this.i++]; }
  // The argument of a head: a number, or a BigInt past 2^53.
  arg(ai) {
    if (ai < 24) return ai;
    if (ai === 24) return this.u8();
    if (ai === 25) { this.need(2); const v = this.view.getUint16(this.i); this.i += 2; return v; }
    if (ai === 26) { this.need(4); const v = this.view.getUint32(this.i); this.i += 4; return v; }
    if (ai === 27) {
      this.need(8);
      const v = this.view.getBigUint64(this.i);
      this.i += 8;
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    throw new Error(`CBOR: reserved additional information ${ai} at byte ${this.i - 1}`);
  }
}

function hex(bytes) {
  return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join('');
}

function diagFloat(v) {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  if (Object.is(v, -0)) return '-0.0';
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

const BREAK = Symbol('break');

function item(r, depth) {
  if (depth > 256) throw new Error('CBOR: nested too deeply');
  const start = r.i;
  const head = r.u8();
  const major = head >> 5;
  const ai = head & 0x1f;
  if (ai === 31) {
    // Indefinite length (or break).
    switch (major) {
      case 2: case 3: {
        // Chunks are definite strings of the same major type.
        const parts = [];
        for (;;) {
          r.need(1);
          const chunkHead = r.b[r.i];
          if (chunkHead !== 0xff && (chunkHead >> 5 !== major || (chunkHead & 0x1f) === 31)) {
            throw new Error(`CBOR: bad chunk in an indefinite-length string at byte ${r.i}`);
          }
          const p = item(r, depth + 1);
          if (p === BREAK) break;
          parts.push(p);
        }
        return `(_ ${parts.join(', ')})`;
      }
      case 4: {
        const parts = [];
        for (;;) {
          const p = item(r, depth + 1);
          if (p === BREAK) break;
          parts.push(p);
        }
        return `[_ ${parts.join(', ')}]`;
      }
      case 5: {
        const parts = [];
        for (;;) {
          const k = item(r, depth + 1);
          if (k === BREAK) break;
          const v = item(r, depth + 1);
          if (v === BREAK) throw new Error(`CBOR: map key without value at byte ${r.i - 1}`);
          parts.push(`${k}: ${v}`);
        }
        return `{_ ${parts.join(', ')}}`;
      }
      case 7:
        return BREAK;
      default:
        throw new Error(`CBOR: indefinite length on major type ${major} at byte ${start}`);
    }
  }
  if (major === 7) {
    if (ai === 25) { r.need(2); const h = r.view.getUint16(r.i); r.i += 2; return diagFloat(halfToNumber(h)); }
    if (ai === 26) { r.need(4); const v = r.view.getFloat32(r.i); r.i += 4; return diagFloat(v); }
    if (ai === 27) { r.need(8); const v = r.view.getFloat64(r.i); r.i += 8; return diagFloat(v); }
    const n = r.arg(ai);
    if (n === 20) return 'false';
    if (n === 21) return 'true';
    if (n === 22) return 'null';
    if (n === 23) return 'undefined';
    return `simple(${n})`;
  }
  const n = r.arg(ai);
  switch (major) {
    case 0:
      return String(n);
    case 1:
      return typeof n === 'bigint' ? String(-1n - n) : String(-1 - n);
    case 2: {
      const len = Number(n);
      r.need(len);
      const s = r.b.subarray(r.i, r.i + len);
      r.i += len;
      return `h'${hex(s)}'`;
    }
    case 3: {
      const len = Number(n);
      r.need(len);
      const s = r.b.subarray(r.i, r.i + len);
      r.i += len;
      let text;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(s);
      } catch {
        throw new Error(`CBOR: text string that is not UTF-8 at byte ${start}`);
      }
      return JSON.stringify(text);
    }
    case 4: {
      const parts = [];
      for (let k = 0; k < Number(n); k++) parts.push(item(r, depth + 1));
      if (parts.includes(BREAK)) throw new Error('CBOR: break inside a definite array');
      return `[${parts.join(', ')}]`;
    }
    case 5: {
      const parts = [];
      for (let k = 0; k < Number(n); k++) {
        const key = item(r, depth + 1);
        const value = item(r, depth + 1);
        if (key === BREAK || value === BREAK) throw new Error('CBOR: break inside a definite map');
        parts.push(`${key}: ${value}`);
      }
      return `{${parts.join(', ')}}`;
    }
    case 6:
      return `${n}(${item(r, depth + 1)})`;
    default:
      throw new Error(`CBOR: unknown major type ${major}`);
  }
}

/**
 * Decodes a CBOR payload (one item, or a sequence of items) into diagnostic notation.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function cborToDiagnostic(bytes) {
  const r = new CborReader(bytes);
  const items = [];
  while (r.i < bytes.length) {
    const v = item(r, 0);
    if (v === BREAK) throw new Error(`CBOR: stray break at byte ${r.i - 1}`);
    items.push(v);
  }
  if (items.length === 0) throw new Error('CBOR: empty payload');
  return items.join(',\n');
}
