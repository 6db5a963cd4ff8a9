/**
 * Small text helpers with Go's exact character classes, so that splitting and
 * trimming agree with BuildKit byte for byte.
 */

/** Go's unicode.IsSpace. */
export function isSpace(ch: string): boolean {
  switch (ch) {
    case "\t":
    case "\n":
    case "\v":
    case "\f":
    case "\r":
    case " ":
    case "\u0085":
    case "\u00a0":
      return true;
  }
  const cp = ch.codePointAt(0) ?? 0;
  if (cp < 0x1680) return false;
  return /^\p{Zs}$|^[\u2028\u2029]$/u.test(ch);
}

/** Go's strings.TrimSpace. */
export function trimSpace(s: string): string {
  return trimRightSpace(trimLeftSpace(s));
}

export function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length) {
    const ch = String.fromCodePoint(s.codePointAt(i)!);
    if (!isSpace(ch)) break;
    i += ch.length;
  }
  return s.slice(i);
}

export function trimRightSpace(s: string): string {
  let end = s.length;
  while (end > 0) {
    let start = end - 1;
    const code = s.charCodeAt(start);
    if (code >= 0xdc00 && code <= 0xdfff && start > 0) start--;
    const ch = s.slice(start, end);
    if (!isSpace(ch)) break;
    end = start;
  }
  return s.slice(0, end);
}

/** BuildKit's reWhitespace: `[\t\v\f\r ]+`. */
export const RE_WHITESPACE = /[\t\v\f\r ]+/;

/** Go's regexp.Split(s, 2) for reWhitespace: at most two parts. */
export function splitWhitespace2(s: string): string[] {
  const m = RE_WHITESPACE.exec(s);
  if (m === null) return [s];
  return [s.slice(0, m.index), s.slice(m.index + m[0].length)];
}

/** Go's regexp.Split(s, -1) for reWhitespace. */
export function splitWhitespaceAll(s: string): string[] {
  if (s === "") return [""];
  return s.split(/[\t\v\f\r ]+/);
}

/**
 * Decode UTF-8 like Go sees it: valid sequences become characters, and each byte
 * of an invalid sequence becomes a lone surrogate U+DC80..U+DCFF ("surrogate
 * escape"), so that dumps can print it as Go's `\xNN` and no byte is lost.
 */
export function decodeUtf8Lossless(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b0 = bytes[i]!;
    if (b0 < 0x80) {
      out += String.fromCharCode(b0);
      i++;
      continue;
    }
    let need = 0;
    let cp = 0;
    let min = 0;
    if (b0 >= 0xc2 && b0 <= 0xdf) [need, cp, min] = [1, b0 & 0x1f, 0x80];
    else if (b0 >= 0xe0 && b0 <= 0xef) [need, cp, min] = [2, b0 & 0x0f, 0x800];
    else if (b0 >= 0xf0 && b0 <= 0xf4) [need, cp, min] = [3, b0 & 0x07, 0x10000];
    let ok = need > 0 && i + need < n;
    for (let k = 1; ok && k <= need; k++) {
      const b = bytes[i + k];
      if (b === undefined || (b & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (b & 0x3f);
    }
    if (ok && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
      out += String.fromCodePoint(cp);
      i += need + 1;
    } else {
      out += String.fromCharCode(0xdc00 + b0);
      i++;
    }
  }
  return out;
}

/** A lone surrogate standing for one raw byte (see decodeUtf8Lossless). */
export function escapedByte(ch: string): number | undefined {
  if (ch.length !== 1) return undefined;
  const c = ch.charCodeAt(0);
  return c >= 0xdc80 && c <= 0xdcff ? c - 0xdc00 : undefined;
}

/** UTF-8 bytes of `s` as a string of U+0000..U+00FF, one char per byte (to mimic Go byte loops). */
export function toByteString(s: string): string {
  // ASCII is one byte per character already (and no escaped byte: those are U+DC80..U+DCFF).
  if (isAscii(s)) return s;
  let out = "";
  for (const ch of s) {
    const raw = escapedByte(ch);
    out += raw !== undefined ? String.fromCharCode(raw) : Buffer.from(ch, "utf8").toString("latin1");
  }
  return out;
}

/** Inverse of toByteString for a slice of the original bytes. */
export function fromByteString(b: string): string {
  return isAscii(b) ? b : decodeUtf8Lossless(Buffer.from(b, "latin1"));
}

function isAscii(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

/** Go's json decoding turns invalid UTF-8 and lone surrogates into U+FFFD. */
export function replaceLoneSurrogates(s: string): string {
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}
