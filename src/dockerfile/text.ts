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

/** UTF-8 bytes of `s` as a string of U+0000..U+00FF, one char per byte (to mimic Go byte loops). */
export function toByteString(s: string): string {
  return Buffer.from(s, "utf8").toString("latin1");
}

/** Inverse of toByteString for a slice of the original bytes. */
export function fromByteString(b: string): string {
  return Buffer.from(b, "latin1").toString("utf8");
}
