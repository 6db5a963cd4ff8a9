/**
 * Package URLs (purl, github.com/package-url/purl-spec) in canonical form:
 * `pkg:type/namespace/name@version?qualifiers`, each namespace segment, the
 * name, the version and each qualifier value percent-encoded (":" left as is,
 * as the spec asks), qualifiers sorted by key and empty ones dropped.
 */

export interface Purl {
  /** deb, apk, pypi, npm, golang, docker... */
  type: string;
  /** "/"-separated (a Go module path's directory, an npm scope with its "@", a distro id). */
  namespace?: string;
  name: string;
  version?: string;
  qualifiers?: Record<string, string | undefined>;
}

/** Percent-encoding of everything but letters, digits, ".-_~" and ":" (encodeURIComponent leaves "!'()*" too). */
function encode(s: string): string {
  return encodeURIComponent(s)
    .replace(/%3A/g, ":")
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function formatPurl(p: Purl): string {
  let out = `pkg:${p.type}/`;
  if (p.namespace !== undefined && p.namespace !== "") {
    out += p.namespace.split("/").filter((s) => s !== "").map(encode).join("/") + "/";
  }
  out += encode(p.name);
  if (p.version !== undefined && p.version !== "") out += `@${encode(p.version)}`;
  const q = Object.entries(p.qualifiers ?? {})
    .filter((e): e is [string, string] => e[1] !== undefined && e[1] !== "")
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (q.length > 0) out += `?${q.map(([k, v]) => `${k.toLowerCase()}=${encode(v)}`).join("&")}`;
  return out;
}
