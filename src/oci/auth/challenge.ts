/**
 * WWW-Authenticate parsing (RFC 7235): `Bearer realm="...",service="...",scope="..."`
 * or `Basic realm="..."`. Several challenges may be given; Bearer is preferred.
 */
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
