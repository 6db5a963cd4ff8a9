/**
 * .dockerignore parsing and matching with Docker's semantics (moby/patternmatcher):
 * Go filepath.Match globs plus `**`, `!` exceptions where the last matching line
 * wins, leading `/` and `./` cleaned away, `#` comments, and a path ignored when
 * it or any parent directory matches. Pure: the caller reads the file(s); when
 * both `.dockerignore` and `<Dockerfile>.dockerignore` exist, pass the latter.
 */
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
    for (const part of pattern.split("/")) if (!part.includes("**")) globRegex(part);
  } catch (e) {
    throw new OcibuildError("DOCKERIGNORE_BAD_PATTERN", `.dockerignore:${line}: syntax error in pattern ${JSON.stringify(pattern)}`, {
      line: line || undefined,
      snippet: raw,
      cause: e,
      hint: "check for an unclosed [ or a trailing \\",
    });
  }
}

type Compiled = { type: "exact" | "prefix" | "suffix"; text: string } | { type: "regexp"; re: RegExp };

/** Escape a literal character for a JS regular expression with the u flag. */
function lit(ch: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(ch) ? `\\${ch}` : ch;
}

/** Copy a Go bracket expression starting at chars[i] ('[') into a JS class; returns [js, nextIndex]. */
function bracket(chars: string[], start: number): [string, number] {
  let i = start + 1;
  let out = "[";
  // Go syntax: only `^` negates (Docker passes the class to Go's regexp unchanged, so `!` is literal)
  if (chars[i] === "^") {
    out += "^";
    i++;
  }
  let first = true;
  for (; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === "]" && !first) return [`${out}]`, i + 1];
    first = false;
    if (ch === "\\") {
      i++;
      if (i >= chars.length) break;
      out += lit(chars[i]!);
    } else if (ch === "-") out += "-";
    else out += lit(ch);
  }
  throw new Error("unclosed [");
}

/** moby/patternmatcher's Pattern.compile, producing a JS matcher. */
function compile(pattern: string): Compiled {
  const chars = Array.from(pattern);
  let re = "^";
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
            re += "[^\\n]*";
            type = "regexp";
          }
        } else {
          re += "(?:[^\\n]*/)?";
          type = "regexp";
        }
        if (k === 0) type = "suffix";
      } else {
        re += "[^/]*";
        type = "regexp";
      }
    } else if (ch === "?") {
      re += "[^/]";
      type = "regexp";
    } else if (ch === "\\") {
      if (i < chars.length) {
        re += lit(chars[i++]!);
        type = "regexp";
      } else re += "\\\\";
    } else if (ch === "[") {
      const [cls, next] = bracket(chars, i - 1);
      re += cls;
      i = next;
      type = "regexp";
    } else {
      re += lit(ch);
    }
  }
  if (type === "regexp") return { type, re: new RegExp(`${re}$`, "u") };
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
      return c.re.test(path);
  }
}

/** Go filepath.Match for one path component (no `/` inside). */
function globRegex(component: string): RegExp {
  const chars = Array.from(component);
  let re = "^";
  for (let i = 0; i < chars.length; ) {
    const ch = chars[i++]!;
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else if (ch === "\\") {
      if (i >= chars.length) throw new Error("trailing backslash");
      re += lit(chars[i++]!);
    } else if (ch === "[") {
      const [cls, next] = bracket(chars, i - 1);
      re += cls;
      i = next;
    } else re += lit(ch);
  }
  return new RegExp(`${re}$`, "u");
}

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
    const file = cleanPath(relPath.replace(/^\.\//, ""));
    if (file === "." || file === "") return false;
    const slash = file.lastIndexOf("/");
    const parentDirs = slash < 0 ? [] : file.slice(0, slash).split("/");
    let matched = false;
    for (const p of compiled) {
      if (p.exclusion !== matched) continue;
      let match = matchCompiled(p.matcher, file);
      for (let i = 0; !match && i < parentDirs.length; i++) {
        match = matchCompiled(p.matcher, parentDirs.slice(0, i + 1).join("/"));
      }
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
        if (!globRegex(part).test(dirParts[i]!)) {
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
