/**
 * .dockerignore parsing and matching with Docker's semantics (moby/patternmatcher):
 * Go filepath.Match globs plus `**`, `!` exceptions where the last matching line
 * wins, leading `/` and `./` cleaned away, `#` comments, and a path ignored when
 * it or any parent directory matches. Pure: the caller reads the file(s); when
 * both `.dockerignore` and `<Dockerfile>.dockerignore` exist, pass the latter.
 */
import { basename, dirname, join } from "node:path";
import { OcibuildError } from "../errors.js";

export interface IgnorePattern {
  /** Cleaned pattern text, without the leading `!`. */
  pattern: string;
  /** True for `!pattern` (re-include what earlier lines ignored). */
  exclusion: boolean;
  /** 1-based line in the ignore file (0 when built by hand). */
  line: number;
}

export interface IgnoreMatcher {
  /** Whether `relPath` (context-relative, `/`-separated, no leading `./`) is ignored. */
  ignores(relPath: string): boolean;
  /**
   * Whether some path strictly below the directory `dirRelPath` could be re-included by a
   * `!` exception. When a directory is ignored and this is false, the walker may skip it whole.
   */
  mayMatchUnder(dirRelPath: string): boolean;
}

/** Go's path.Clean for `/`-separated paths. */
export function cleanPath(p: string): string {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(part);
  }
  const joined = out.join("/");
  if (rooted) return `/${joined}`;
  return joined === "" ? "." : joined;
}

/** Go's strings.TrimSpace for ASCII and the common Unicode spaces. */
function trim(s: string): string {
  return s.replace(/^[\s\u0085]+|[\s\u0085]+$/gu, "");
}

/** Parse .dockerignore text (Docker's ignorefile.ReadAll). Throws DOCKERIGNORE_BAD_PATTERN. */
export function parseDockerignore(text: string): IgnorePattern[] {
  const src = text.startsWith("\ufeff") ? text.slice(1) : text;
  const lines = src.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const out: IgnorePattern[] = [];
  lines.forEach((rawLine, i) => {
    const raw = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (raw.startsWith("#")) return;
    let pattern = trim(raw);
    if (pattern === "") return;
    const exclusion = pattern.startsWith("!");
    if (exclusion) pattern = trim(pattern.slice(1));
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith("/")) pattern = pattern.slice(1);
    }
    if (exclusion && pattern === "") {
      throw new OcibuildError("DOCKERIGNORE_BAD_PATTERN", `.dockerignore:${i + 1}: illegal exclusion pattern: "!"`, {
        line: i + 1,
        snippet: raw,
        hint: "write the path to re-include after the !, e.g. !keep.txt",
      });
    }
    validate(pattern, i + 1, raw);
    out.push({ pattern, exclusion, line: i + 1 });
  });
  return out;
}

function validate(pattern: string, line: number, raw: string): void {
  try {
    compile(pattern);
    for (const part of pattern.split("/")) if (!part.includes("**")) globProgram(part);
  } catch (e) {
    throw new OcibuildError("DOCKERIGNORE_BAD_PATTERN", `.dockerignore:${line}: syntax error in pattern ${JSON.stringify(pattern)}`, {
      line: line || undefined,
      snippet: raw,
      cause: e,
      hint: "check for an unclosed [ or a trailing \\",
    });
  }
}

/**
 * Patterns compile to a tiny NFA (predicates, splits, jumps) run by set simulation:
 * linear in the path length, where a backtracking RegExp for `*a*a*a...` or many
 * `**` can take exponential time on an unlucky path. Same language as
 * patternmatcher's Go regexps.
 */
type Inst = { op: "pred"; test: (ch: string) => boolean } | { op: "split"; x: number; y: number } | { op: "jmp"; x: number } | { op: "match" };

class Program {
  readonly insts: Inst[] = [];
  /** Literal characters per token, null for wildcards/classes: for a quick prefix/suffix filter. */
  private readonly lits: (string | null)[] = [];
  private compiled?: { insts: Inst[]; closures: number[][]; start: number[]; prefix: string; suffix: string; literal: boolean };

  pred(test: (ch: string) => boolean, literal: string | null = null): void {
    this.insts.push({ op: "pred", test });
    this.lits.push(literal);
  }
  /** test* */
  star(test: (ch: string) => boolean): void {
    const l = this.insts.length;
    this.insts.push({ op: "split", x: l + 1, y: l + 3 }, { op: "pred", test }, { op: "jmp", x: l });
    this.lits.push(null);
  }
  /** (?:[^\n]*\/)? */
  optionalDirs(): void {
    const l = this.insts.length;
    // l: split(l+1, l+5); l+1: split(l+2, l+4); l+2: [^\n]; l+3: jmp l+1; l+4: '/'; l+5: ...
    this.insts.push(
      { op: "split", x: l + 1, y: l + 5 },
      { op: "split", x: l + 2, y: l + 4 },
      { op: "pred", test: notNewline },
      { op: "jmp", x: l + 1 },
      { op: "pred", test: (c) => c === "/" },
    );
    this.lits.push(null);
  }
  /** A program that matches nothing. */
  nothing(): this {
    this.pred(() => false);
    return this;
  }

  private compile() {
    if (this.compiled !== undefined) return this.compiled;
    const insts = [...this.insts, { op: "match" } as Inst];
    // epsilon closure of every pc: the pred/match instructions reachable through jumps and splits
    const closures = insts.map((_, pc) => {
      const out: number[] = [];
      const seen = new Set<number>();
      const walk = (p: number) => {
        if (seen.has(p)) return;
        seen.add(p);
        const inst = insts[p]!;
        if (inst.op === "jmp") walk(inst.x);
        else if (inst.op === "split") {
          walk(inst.x);
          walk(inst.y);
        } else out.push(p);
      };
      walk(pc);
      return out;
    });
    let i = 0;
    let prefix = "";
    while (i < this.lits.length && this.lits[i] !== null) prefix += this.lits[i++];
    const literal = i === this.lits.length;
    let suffix = "";
    for (let j = this.lits.length - 1; !literal && j >= 0 && this.lits[j] !== null; j--) suffix = this.lits[j] + suffix;
    this.compiled = { insts, closures, start: closures[0]!, prefix, suffix, literal };
    return this.compiled;
  }

  /** Whether the whole of `s` matches (set simulation, linear in `s`). */
  matches(s: string): boolean {
    const { insts, closures, start, prefix, suffix, literal } = this.compile();
    if (literal) return s === prefix;
    if (!s.startsWith(prefix) || !s.endsWith(suffix) || s.length < prefix.length + suffix.length) return false;
    const mark = new Int32Array(insts.length).fill(-1);
    let current = start;
    let step = 0;
    for (const ch of s) {
      const next: number[] = [];
      for (const pc of current) {
        const inst = insts[pc]!;
        if (inst.op !== "pred" || !inst.test(ch)) continue;
        for (const q of closures[pc + 1]!) {
          if (mark[q] === step) continue;
          mark[q] = step;
          next.push(q);
        }
      }
      if (next.length === 0) return false;
      current = next;
      step++;
    }
    return current.some((pc) => insts[pc]!.op === "match");
  }
}

const notSlash = (c: string) => c !== "/";
const notNewline = (c: string) => c !== "\n";

/** A Go bracket expression at chars[start] ('['): its predicate and the index after `]`. */
function bracket(chars: string[], start: number): [(ch: string) => boolean, number] {
  let i = start + 1;
  // Go syntax: only `^` negates (Docker passes the class to Go's regexp unchanged, so `!` is literal)
  const negated = chars[i] === "^";
  if (negated) i++;
  const ranges: [number, number][] = [];
  let first = true;
  const readChar = (): number => {
    let ch = chars[i]!;
    if (ch === "\\") {
      i++;
      if (i >= chars.length) throw new Error("trailing backslash in class");
      ch = chars[i]!;
    }
    i++;
    return ch.codePointAt(0)!;
  };
  while (i < chars.length) {
    if (chars[i] === "]" && !first) {
      const test = (ch: string) => {
        const cp = ch.codePointAt(0)!;
        const inside = ranges.some(([lo, hi]) => cp >= lo && cp <= hi);
        return negated ? !inside : inside;
      };
      return [test, i + 1];
    }
    first = false;
    const lo = readChar();
    if (chars[i] === "-" && i + 1 < chars.length && chars[i + 1] !== "]") {
      i++;
      const hi = readChar();
      if (hi < lo) throw new Error("bad character range");
      ranges.push([lo, hi]);
    } else ranges.push([lo, lo]);
  }
  throw new Error("unclosed [");
}

type Compiled = { type: "exact" | "prefix" | "suffix"; text: string } | { type: "regexp"; prog: Program };

/** moby/patternmatcher's Pattern.compile: classify the pattern, building an NFA for the general case. */
function compile(pattern: string): Compiled {
  const chars = Array.from(pattern);
  const prog = new Program();
  let type: "exact" | "prefix" | "suffix" | "regexp" = "exact";
  for (let i = 0, k = 0; i < chars.length; k++) {
    const ch = chars[i++]!;
    if (ch === "*") {
      if (chars[i] === "*") {
        i++;
        if (chars[i] === "/") i++;
        if (i >= chars.length) {
          if (type === "exact") type = "prefix";
          else {
            prog.star(notNewline);
            type = "regexp";
          }
        } else {
          prog.optionalDirs();
          type = "regexp";
        }
        if (k === 0) type = "suffix";
      } else {
        prog.star(notSlash);
        type = "regexp";
      }
    } else if (ch === "?") {
      prog.pred(notSlash);
      type = "regexp";
    } else if (ch === "\\") {
      // a trailing backslash makes Go's regexp invalid: no path matches (validate() reports it)
      if (i >= chars.length) return { type: "regexp", prog: new Program().nothing() };
      const lit = chars[i++]!;
      prog.pred((c) => c === lit, lit);
      type = "regexp";
    } else if (ch === "[") {
      const [test, next] = bracket(chars, i - 1);
      prog.pred(test);
      i = next;
      type = "regexp";
    } else {
      prog.pred((c) => c === ch, ch);
    }
  }
  if (type === "regexp") return { type, prog };
  return { type, text: pattern };
}

function matchCompiled(c: Compiled, path: string): boolean {
  switch (c.type) {
    case "exact":
      return path === c.text;
    case "prefix":
      return path.startsWith(c.text.slice(0, -2));
    case "suffix": {
      const suffix = c.text.slice(2);
      if (path.endsWith(suffix)) return true;
      return suffix.startsWith("/") && path === suffix.slice(1);
    }
    case "regexp":
      return c.prog.matches(path);
  }
}

/** Go filepath.Match for one path component (no `/` inside). */
function globProgram(component: string): Program {
  const chars = Array.from(component);
  const prog = new Program();
  for (let i = 0; i < chars.length; ) {
    const ch = chars[i++]!;
    if (ch === "*") prog.star(notSlash);
    else if (ch === "?") prog.pred(notSlash);
    else if (ch === "\\") {
      if (i >= chars.length) throw new Error("trailing backslash");
      const lit = chars[i++]!;
      prog.pred((c) => c === lit, lit);
    } else if (ch === "[") {
      const [test, next] = bracket(chars, i - 1);
      prog.pred(test);
      i = next;
    } else prog.pred((c) => c === ch, ch);
  }
  return prog;
}

/** `.` or `..` segments, empty segments, a leading or trailing slash: only then is cleaning needed. */
const NEEDS_CLEAN = /(?:^|\/)\.\.?(?:\/|$)|\/\/|^\/|\/$/;

export function createIgnoreMatcher(patterns: IgnorePattern[]): IgnoreMatcher {
  const compiled = patterns
    .map((p) => ({ ...p, pattern: cleanPath(trim(p.pattern)) }))
    .filter((p) => p.pattern !== "" && p.pattern !== ".")
    .map((p) => {
      validate(p.pattern, p.line, p.pattern);
      return { exclusion: p.exclusion, dirs: p.pattern.split("/"), matcher: compile(p.pattern) };
    });
  const hasExclusions = compiled.some((p) => p.exclusion);

  const ignores = (relPath: string): boolean => {
    const file = NEEDS_CLEAN.test(relPath) ? cleanPath(relPath) : relPath;
    if (file === "." || file === "") return false;
    // the parent directories as paths: "a", "a/b", ... (computed once, tried by every pattern)
    const parents: string[] = [];
    for (let at = file.indexOf("/"); at >= 0; at = file.indexOf("/", at + 1)) parents.push(file.slice(0, at));
    let matched = false;
    for (const p of compiled) {
      if (p.exclusion !== matched) continue;
      let match = matchCompiled(p.matcher, file);
      for (let i = 0; !match && i < parents.length; i++) match = matchCompiled(p.matcher, parents[i]!);
      if (match) matched = !p.exclusion;
    }
    return matched;
  };

  const mayMatchUnder = (dirRelPath: string): boolean => {
    if (!hasExclusions) return false;
    const dir = cleanPath(dirRelPath.replace(/^\.\//, ""));
    const dirParts = dir === "." ? [] : dir.split("/");
    for (const p of compiled) {
      if (!p.exclusion) continue;
      let possible = true;
      for (let i = 0; i < dirParts.length; i++) {
        const part = p.dirs[i];
        if (part === undefined || part.includes("**")) break;
        if (!globProgram(part).matches(dirParts[i]!)) {
          possible = false;
          break;
        }
      }
      if (possible) return true;
    }
    return false;
  };

  return { ignores, mayMatchUnder };
}

/**
 * Where to look for the ignore file, first hit wins: `<Dockerfile name>.dockerignore`
 * beside the Dockerfile, then `.dockerignore` at the context root (pure: no I/O).
 */
export function ignoreFileCandidates(dockerfilePath: string, contextDir: string): string[] {
  return [join(dirname(dockerfilePath), `${basename(dockerfilePath)}.dockerignore`), join(contextDir, ".dockerignore")];
}
