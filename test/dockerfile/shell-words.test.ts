/**
 * Expansion details beyond BuildKit's vectors: used/unset reporting, the backtick
 * escape token, and the shell-pattern matcher checked against a RegExp reference
 * (leftmost-first, like Go's regexp) on random patterns and inputs.
 */
import { describe, expect, it } from "vitest";
import { expandWord, expandWords } from "../../src/dockerfile/index.js";

describe("expandWord / expandWords", () => {
  it("reports which variables were used and which were unset", () => {
    const used: string[] = [];
    const unset: string[] = [];
    const out = expandWord("$A ${B:-x} ${C} \\$D '$E'", { A: "1", C: "" }, { onUsed: (n) => used.push(n), onUnset: (n) => unset.push(n) });
    expect(out).toBe("1 x  $D $E");
    expect(used).toEqual(["A", "C"]);
    expect(unset).toEqual(["B"]);
  });

  it("honours the backtick escape token", () => {
    expect(expandWord("a`$B c\\d", { B: "x" }, { escapeToken: "`" })).toBe("a$B c\\d");
    expect(expandWords("one` two three", {}, { escapeToken: "`" })).toEqual(["one two", "three"]);
  });

  it("fails with DOCKERFILE_EXPANSION and names the word", () => {
    expect(() => expandWord("${A:?needed}", {})).toThrow(
      expect.objectContaining({ code: "DOCKERFILE_EXPANSION", message: expect.stringContaining("A: needed") }),
    );
    expect(() => expandWord("${A", {})).toThrow(expect.objectContaining({ code: "DOCKERFILE_EXPANSION" }));
  });

  it("a pathological pattern finishes (linear-time matcher)", () => {
    const value = "a".repeat(2000);
    expect(expandWord(`\${V%%${"*a".repeat(30)}*b}`, { V: value })).toBe(value);
    expect(expandWord(`\${V//${"*a".repeat(30)}*b/x}`, { V: value })).toBe(value);
  });
});

/** Reference semantics: BuildKit's regexp translation, run with JS's backtracking RegExp. */
function refRegex(pattern: string, greedy: boolean, anchored: boolean, flags = "u"): RegExp {
  let out = anchored ? "^" : "";
  for (const ch of pattern) out += ch === "*" ? (greedy ? "[^\\n]*" : "[^\\n]*?") : ch === "?" ? "[^\\n]" : ch;
  return new RegExp(out, flags);
}
function refTrimPrefix(p: string, v: string, greedy: boolean): string {
  const m = refRegex(p, greedy, true).exec(v);
  return m === null ? v : v.slice(m[0].length);
}
function refReplaceFirst(p: string, v: string, r: string): string {
  const m = refRegex(p, true, false).exec(v);
  return m === null ? v : v.slice(0, m.index) + r + v.slice(m.index + m[0].length);
}
function refReplaceAll(p: string, v: string, r: string): string {
  const re = refRegex(p, true, false, "gu");
  let out = "";
  let pos = 0;
  let copied = 0;
  let prevEnd = -1;
  while (pos <= v.length) {
    re.lastIndex = pos;
    const m = re.exec(v);
    if (m === null) break;
    const end = m.index + m[0].length;
    const accept = !(end === m.index && m.index === prevEnd);
    pos = end === pos ? pos + 1 : end;
    prevEnd = end;
    if (accept) {
      out += v.slice(copied, m.index) + r;
      copied = end;
    }
  }
  return out + v.slice(copied);
}

describe("shell patterns agree with the RegExp reference", () => {
  it("on 3000 random pattern/value pairs (seed 0xc0ffee)", () => {
    let a = 0xc0ffee;
    const rand = () => {
      a = (Math.imul(a, 1103515245) + 12345) >>> 0;
      return a / 4294967296;
    };
    const pick = (alphabet: string, max: number) => {
      let s = "";
      const n = Math.floor(rand() * max);
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
      return s;
    };
    for (let i = 0; i < 3000; i++) {
      const p = pick("ab*?", 6);
      const v = pick("aab\n", 8);
      const env = { V: v };
      const ctx = JSON.stringify({ p, v });
      expect(expandWord(`\${V#${p}}`, env), ctx).toBe(refTrimPrefix(p, v, false));
      expect(expandWord(`\${V##${p}}`, env), ctx).toBe(refTrimPrefix(p, v, true));
      const rev = (s: string) => Array.from(s).reverse().join("");
      expect(expandWord(`\${V%${p}}`, env), ctx).toBe(rev(refTrimPrefix(rev(p), rev(v), false)));
      expect(expandWord(`\${V%%${p}}`, env), ctx).toBe(rev(refTrimPrefix(rev(p), rev(v), true)));
      if (p !== "" && !p.startsWith("/")) {
        expect(expandWord(`\${V/${p}/X}`, env), ctx).toBe(refReplaceFirst(p, v, "X"));
        expect(expandWord(`\${V//${p}/X}`, env), ctx).toBe(refReplaceAll(p, v, "X"));
      }
    }
  });
});
