/**
 * Selecting COPY/ADD sources in a tree (the build context, or another stage's or
 * image's root) with Docker's rules: paths are relative to the tree's root and can
 * never leave it (".." is clamped at the root, symlinks resolve root-relative),
 * wildcards match with Go's filepath.Match per path component, and paths that
 * .dockerignore excludes do not exist.
 */
import { readFile, readdir } from "node:fs/promises";
import { relative } from "node:path";
import type { Stats } from "node:fs";
import { OcibuildError } from "../errors.js";
import { createIgnoreMatcher, parseDockerignore, type IgnoreMatcher } from "../dockerfile/index.js";
import { resolveFollow, resolveNoFollow } from "./fs/path.js";

export interface SourceTree {
  /** Absolute host path of the tree's root. */
  root: string;
  /** .dockerignore of the build context; absent for stages and images. */
  ignore?: IgnoreMatcher;
  /** For messages: "the build context", "context 'src'", "stage build", "image alpine:3". */
  label: string;
  /** A named context's: what its files' names in a cache key start with ("context 'src' file "), so a miss names the context. */
  keyPrefix?: string;
}

/** A local tree (a build context), with the first of `ignoreFiles` that exists as its .dockerignore. */
export async function localTree(root: string, ignoreFiles: readonly string[], named: Pick<SourceTree, "label" | "keyPrefix">): Promise<SourceTree> {
  for (const f of ignoreFiles) {
    const text = await readFile(f, "utf8").catch(() => undefined);
    if (text !== undefined) return { root, ignore: createIgnoreMatcher(parseDockerignore(text)), ...named };
  }
  return { root, ...named };
}

export interface SourceMatch {
  /** Root-relative path of what was selected ("" for the root itself). */
  rel: string;
  /**
   * Root-relative path of what it resolves to, symlinks followed: where it really is
   * in the tree, and so the path .dockerignore is applied to below it.
   */
  realRel: string;
  /** Host path of the (symlink-resolved) file or directory to copy. */
  hostPath: string;
  stats: Stats;
}

/** Lexically clean a source path against the root: "../a/./b/" -> "a/b". */
export function cleanSourcePath(p: string): string[] {
  const out: string[] = [];
  for (const c of p.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") out.pop();
    else out.push(c);
  }
  return out;
}

const MAGIC = /[*?[\\]/;

export function hasWildcard(p: string): boolean {
  return MAGIC.test(p);
}

/** Go's filepath.Match for one path component, compiled to a RegExp. Throws on a bad pattern. */
export function componentMatcher(pattern: string): RegExp {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "\\") {
      i++;
      if (i >= pattern.length) throw badPattern(pattern);
      re += escapeRe(pattern[i]!);
    } else if (c === "[") {
      let j = i + 1;
      let cls = "";
      if (pattern[j] === "^" || pattern[j] === "!") {
        cls += "^";
        j++;
      }
      let first = true;
      for (; j < pattern.length && (pattern[j] !== "]" || first); j++) {
        first = false;
        let ch = pattern[j]!;
        if (ch === "\\") {
          j++;
          if (j >= pattern.length) throw badPattern(pattern);
          ch = pattern[j]!;
        }
        cls += ch === "]" || ch === "\\" || ch === "^" ? `\\${ch}` : ch === "-" ? "-" : escapeRe(ch);
      }
      if (j >= pattern.length) throw badPattern(pattern);
      if (cls === "" || cls === "^") throw badPattern(pattern);
      re += `[${cls}]`;
      i = j;
    } else re += escapeRe(c);
  }
  return new RegExp(`${re}$`, "s");
}

function escapeRe(c: string): string {
  return /[.*+?^${}()|[\]\\/-]/.test(c) ? `\\${c}` : c;
}

function badPattern(p: string): OcibuildError {
  return new OcibuildError("BUILD_SOURCE_PATTERN_INVALID", `invalid source pattern "${p}"`);
}

function isIgnored(tree: SourceTree, rel: string): boolean {
  return rel !== "" && tree.ignore !== undefined && tree.ignore.ignores(rel);
}

/**
 * Resolve a path of the tree, following symlinks inside it, as BuildKit sees a
 * context: what .dockerignore excludes is not there, so a path that is ignored, or a
 * link that resolves to an ignored path (`alias -> secret.env`, `pdir -> ignored-dir/`),
 * is missing rather than a way to read it.
 */
async function resolveInTree(tree: SourceTree, comps: string[]): Promise<SourceMatch | null> {
  const rel = comps.join("/");
  if (isIgnored(tree, rel)) return null;
  const r = await resolveFollow(tree.root, comps);
  if (r === null) return null;
  // resolveFollow resolves every parent and the last link: its host path is the real one.
  const realRel = relative(tree.root, r.hostPath);
  if (realRel !== rel && isIgnored(tree, realRel)) return null;
  return { rel, realRel, hostPath: r.hostPath, stats: r.stats };
}

/**
 * Select the sources a COPY/ADD source string names. Without wildcards: exactly that
 * path (symlinks followed inside the root), or an empty list when it does not exist
 * or is ignored. With wildcards: every matching path, sorted.
 */
export async function selectSources(tree: SourceTree, source: string): Promise<SourceMatch[]> {
  const comps = cleanSourcePath(source);
  if (!comps.some((c) => hasWildcard(c))) {
    const m = await resolveInTree(tree, comps);
    return m === null ? [] : [m];
  }
  const out: SourceMatch[] = [];
  await walkPattern(tree, [], comps, out);
  out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return out;
}

async function walkPattern(tree: SourceTree, done: string[], rest: string[], out: SourceMatch[]): Promise<void> {
  if (rest.length === 0) {
    const m = await resolveInTree(tree, done);
    if (m !== null) out.push(m);
    return;
  }
  const [head, ...tail] = rest as [string, ...string[]];
  if (!hasWildcard(head)) {
    await walkPattern(tree, [...done, head], tail, out);
    return;
  }
  const re = componentMatcher(head);
  const dir = await resolveFollow(tree.root, done);
  if (!dir || !dir.stats.isDirectory()) return;
  const names = await readdir(dir.hostPath);
  for (const name of names.sort()) {
    if (!re.test(name)) continue;
    const next = [...done, name];
    if (tail.length > 0) {
      // Only descend through directories (following symlinks inside the root).
      const st = await resolveNoFollow(tree.root, next);
      if (!st) continue;
    }
    await walkPattern(tree, next, tail, out);
  }
}

