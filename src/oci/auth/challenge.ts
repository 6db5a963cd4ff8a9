/**
 * WWW-Authenticate parsing (RFC 7235): `Bearer realm="...",service="...",scope="..."`
 * or `Basic realm="..."`. Several challenges may be given; Bearer is preferred.
 * Also the repository scopes a challenge names, and merging them into those asked for.
 */
import type { Scope } from "../registry/types.js";

export interface Challenge {
  scheme: "basic" | "bearer";
  params: Record<string, string>;
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const v of values) {
    let i = 0;
    let current: Challenge | undefined;
    while (i < v.length) {
      while (i < v.length && (v[i] === " " || v[i] === ",")) i++;
      const tokenMatch = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(v.slice(i));
      if (!tokenMatch) break;
      const token = tokenMatch[0];
      i += token.length;
      while (i < v.length && v[i] === " ") i++;
      if (v[i] === "=") {
        // auth-param of the current challenge
        i++;
        while (i < v.length && v[i] === " ") i++;
        let value = "";
        if (v[i] === '"') {
          i++;
          while (i < v.length && v[i] !== '"') {
            if (v[i] === "\\" && i + 1 < v.length) i++;
            value += v[i];
            i++;
          }
          i++;
        } else {
          const m = /^[^,\s]*/.exec(v.slice(i))![0];
          value = m;
          i += m.length;
        }
        if (current) current.params[token.toLowerCase()] = value;
      } else {
        const scheme = token.toLowerCase();
        current = scheme === "basic" || scheme === "bearer" ? { scheme, params: {} } : undefined;
        if (current) out.push(current);
      }
    }
  }
  return out.sort((a, b) => (a.scheme === b.scheme ? 0 : a.scheme === "bearer" ? -1 : 1));
}

/** "repository:a/b:pull,push repository:c:pull" -> scopes (other resource types are ignored). */
export function scopesFromChallenge(param: string | undefined): Scope[] {
  const out: Scope[] = [];
  for (const part of (param ?? "").split(" ")) {
    const m = /^repository:(.+):([a-z*,]+)$/.exec(part);
    if (!m) continue;
    const actions = m[2]!.split(",").filter((a): a is "pull" | "push" => a === "pull" || a === "push");
    if (actions.length) out.push({ repository: m[1]!, actions });
  }
  return out;
}

export function mergeScopes(a: Scope[], b: Scope[]): Scope[] {
  const fresh = b.filter((s) => !a.some((x) => x.repository === s.repository && s.actions.every((act) => x.actions.includes(act))));
  return fresh.length ? [...a, ...fresh] : a;
}
