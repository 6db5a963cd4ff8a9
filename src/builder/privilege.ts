/**
 * What this process may do to files: real root (the initial user namespace),
 * root inside a user namespace (rootless mode: the building user mapped to 0 and,
 * with a subordinate id range, other ids too), or a plain user.
 *
 * Rootless mode differs from real root in three ways the filesystem code cares
 * about: overlayfs keeps its metadata in `user.overlay.*` xattrs (`userxattr`),
 * `trusted.*` xattrs and device nodes cannot be made (whiteouts, 0/0, can), and
 * a chown to an id outside the mapping fails with EINVAL.
 */
import { readFileSync } from "node:fs";

export interface Privilege {
  /** uid 0 in this process's user namespace: chown, mount, bwrap --cap-add work. */
  root: boolean;
  /** Inside a user namespace other than the initial one. */
  userNamespace: boolean;
  /** How many uids the namespace maps (4294967295 in the initial namespace). */
  mappedIds: number;
}

/** Parse /proc/self/uid_map ("inside outside count" per line). */
export function parseIdMap(text: string): { inside: number; outside: number; count: number }[] {
  return text
    .split("\n")
    .map((l) => l.trim().split(/\s+/).map(Number))
    .filter((f) => f.length === 3 && f.every((n) => Number.isInteger(n)))
    .map(([inside, outside, count]) => ({ inside: inside!, outside: outside!, count: count! }));
}

function readPrivilege(): Privilege {
  const root = process.getuid?.() === 0;
  let map: { inside: number; outside: number; count: number }[] = [];
  try {
    map = parseIdMap(readFileSync("/proc/self/uid_map", "utf8"));
  } catch {
    // No /proc: take the process at its word.
  }
  const initial = map.length === 0 || (map.length === 1 && map[0]!.inside === 0 && map[0]!.outside === 0 && map[0]!.count === 4294967295);
  return { root, userNamespace: !initial, mappedIds: initial ? 4294967295 : map.reduce((n, m) => n + m.count, 0) };
}

/** Read once when the module loads (one small read): it cannot change while the process runs. */
const PRIVILEGE: Readonly<Privilege> = Object.freeze(readPrivilege());

/** This process's privilege. */
export function privilege(): Readonly<Privilege> {
  return PRIVILEGE;
}

/** Root in the initial user namespace: `trusted.*` xattrs, device nodes, any owner. */
export function isRealRoot(): boolean {
  const p = privilege();
  return p.root && !p.userNamespace;
}
