/**
 * Shell patterns of ${VAR#p} ${VAR%p} ${VAR/p/r}: `*` (any run, no newline),
 * `?` (one character, no newline), `\*` `\?` `\\` escapes, and `\}` `\/` whose
 * backslash is dropped. Matched with a small Pike VM that gives the same
 * leftmost-first results as BuildKit's Go regexps, in time linear in the input
 * (a backtracking JS RegExp can take exponential time on `*a*a*a*...`).
 */

/** A pattern error; the lexer turns it into DOCKERFILE_EXPANSION. */
export class PatternError extends Error {}

type Inst =
  | { op: "char"; c: string }
  | { op: "any" }
  | { op: "anyNL" }
  | { op: "split"; x: number; y: number }
  | { op: "jmp"; x: number }
  | { op: "save" }
  | { op: "match" };

type Token = { kind: "lit"; c: string } | { kind: "star" } | { kind: "one" };

function tokenize(pattern: string): Token[] {
  const chars = Array.from(pattern);
  const out: Token[] = [];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === "*") out.push({ kind: "star" });
    else if (ch === "?") out.push({ kind: "one" });
    else if (ch === "\\") {
      const next = chars[i + 1];
      if (next === "}" || next === "/") continue;
      i++;
      if (next !== "*" && next !== "?" && next !== "\\") {
        throw new PatternError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${next ?? ""}'`);
      }
      out.push({ kind: "lit", c: next });
    } else out.push({ kind: "lit", c: ch });
  }
  return out;
}

/** Compile; `unanchored` prefixes a lazy any-run so the match may start anywhere. */
function compile(pattern: string, greedy: boolean, unanchored: boolean): Inst[] {
  const prog: Inst[] = [];
  if (unanchored) {
    // L0: split(L3, L1); L1: anyNL; L2: jmp L0; L3: save (the match starts here) ...
    prog.push({ op: "split", x: 3, y: 1 }, { op: "anyNL" }, { op: "jmp", x: 0 }, { op: "save" });
  }
  for (const t of tokenize(pattern)) {
    if (t.kind === "lit") prog.push({ op: "char", c: t.c });
    else if (t.kind === "one") prog.push({ op: "any" });
    else {
      const l0 = prog.length;
      const body = l0 + 1;
      const end = l0 + 3;
      prog.push(greedy ? { op: "split", x: body, y: end } : { op: "split", x: end, y: body }, { op: "any" }, { op: "jmp", x: l0 });
    }
  }
  prog.push({ op: "match" });
  return prog;
}

interface Thread {
  pc: number;
  start: number;
}

/** Leftmost-first match of `prog` in `chars` starting the search at `from`; [start, end) in chars. */
function run(prog: Inst[], chars: string[], from: number): [number, number] | undefined {
  let clist: Thread[] = [];
  let matched: [number, number] | undefined;
  const add = (list: Thread[], seen: Set<number>, pc: number, start: number, pos: number) => {
    if (seen.has(pc)) return;
    seen.add(pc);
    const inst = prog[pc]!;
    if (inst.op === "save") add(list, seen, pc + 1, pos, pos);
    else if (inst.op === "jmp") add(list, seen, inst.x, start, pos);
    else if (inst.op === "split") {
      add(list, seen, inst.x, start, pos);
      add(list, seen, inst.y, start, pos);
    } else list.push({ pc, start });
  };
  add(clist, new Set(), 0, from, from);
  for (let pos = from; pos <= chars.length; pos++) {
    const nlist: Thread[] = [];
    const seen = new Set<number>();
    const ch = pos < chars.length ? chars[pos] : undefined;
    for (const t of clist) {
      const inst = prog[t.pc]!;
      if (inst.op === "match") {
        matched = [t.start, pos];
        break; // lower-priority threads lose to this match
      }
      if (ch === undefined) continue;
      if ((inst.op === "char" && inst.c === ch) || (inst.op === "any" && ch !== "\n") || inst.op === "anyNL") {
        add(nlist, seen, t.pc + 1, t.start, pos + 1);
      }
    }
    clist = nlist;
    if (clist.length === 0) break;
  }
  return matched;
}

/** Remove the shortest (or longest, greedy) prefix of `value` matching `pattern`. */
export function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const chars = Array.from(value);
  const m = run(compile(pattern, greedy, false), chars, 0);
  return m === undefined ? value : chars.slice(m[1]).join("");
}

/** Reverse a pattern but keep `\x` escapes in front of what they escape. */
function reversePattern(pattern: string): string {
  const runes = Array.from(pattern);
  const out: string[] = new Array<string>(runes.length);
  const last = runes.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = runes[i]!;
    const o = last - i;
    if (tok === "\\" && i !== last) {
      out[o - 1] = tok;
      out[o] = runes[i + 1]!;
      i += 2;
    } else {
      out[o] = tok;
      i++;
    }
  }
  return out.join("");
}

/** Remove the shortest (or longest) suffix: a prefix search on the reversed strings, as BuildKit does. */
export function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  const rev = (s: string) => Array.from(s).reverse().join("");
  return rev(trimPrefix(reversePattern(pattern), rev(value), greedy));
}

/** ${VAR/pattern/replacement} and ${VAR//pattern/replacement}, with Go's ReplaceAllString rules. */
export function replacePattern(pattern: string, value: string, replacement: string, all: boolean): string {
  const prog = compile(pattern, true, true);
  const chars = Array.from(value);
  if (!all) {
    const m = run(prog, chars, 0);
    if (m === undefined) return value;
    return chars.slice(0, m[0]).join("") + replacement + chars.slice(m[1]).join("");
  }
  let out = "";
  let copied = 0;
  let pos = 0;
  let prevEnd = -1;
  while (pos <= chars.length) {
    const m = run(prog, chars, pos);
    if (m === undefined) break;
    const [start, end] = m;
    // Go skips an empty match right where the previous match ended
    const accept = !(end === start && start === prevEnd);
    pos = end === pos ? pos + 1 : end;
    prevEnd = end;
    if (accept) {
      out += chars.slice(copied, start).join("") + expandGoTemplate(replacement, chars.slice(start, end).join(""));
      copied = end;
    }
  }
  return out + chars.slice(copied).join("");
}

/** Go's regexp template expansion with only group 0: `$0`/`${0}` is the match, other names empty, `$$` a dollar. */
function expandGoTemplate(template: string, match: string): string {
  let out = "";
  let rest = template;
  for (;;) {
    const at = rest.indexOf("$");
    if (at < 0) break;
    out += rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (rest.startsWith("$")) {
      out += "$";
      rest = rest.slice(1);
      continue;
    }
    const m = rest.startsWith("{") ? /^\{([\p{L}\p{Nd}_]+)\}/u.exec(rest) : /^([\p{L}\p{Nd}_]+)/u.exec(rest);
    if (m === null) {
      out += "$";
      continue;
    }
    rest = rest.slice(m[0].length);
    const name = m[1]!;
    if (/^[0-9]+$/.test(name) && name.length < 9 && Number(name) === 0) out += match;
  }
  return out + rest;
}
