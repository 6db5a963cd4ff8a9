/** Names sort in the byte order of their UTF-8 (tar's and Go's), whatever UTF-16 would say. */
import { describe, expect, it } from "vitest";
import { byUtf8 } from "../../src/oci/tar-entries.js";

const bytes = (a: string, b: string) => Math.sign(Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));

describe("byUtf8", () => {
  it("orders a character above U+FFFF after U+E000-U+FFFF, where UTF-16 puts it before", () => {
    const names = ["\uffff", "\u{1f600}", "\ue000", "a", "", "ab", "\u00e9", "z"];
    expect([...names].sort(byUtf8)).toEqual(["", "a", "ab", "z", "\u00e9", "\ue000", "\uffff", "\u{1f600}"]);
    // UTF-16 code units would have put the emoji (a surrogate pair) before U+E000.
    expect([...names].sort()).not.toEqual([...names].sort(byUtf8));
  });

  it("agrees with comparing the encoded bytes on many random names", () => {
    const pool = ["a", "b", "Z", "0", "-", ".", "\u00e9", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffee", "\uffff", "\u{10000}", "\u{1f600}", "\u{10ffff}"];
    let x = 7;
    const next = () => (x = (x * 1103515245 + 12345) >>> 0);
    for (let n = 0; n < 20000; n++) {
      const make = () => Array.from({ length: next() % 5 }, () => pool[next() % pool.length]).join("");
      const a = make();
      const b = next() % 3 === 0 ? a + make() : make();
      expect(Math.sign(byUtf8(a, b)), JSON.stringify([a, b])).toBe(bytes(a, b));
    }
  });
});
