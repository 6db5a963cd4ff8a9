/**
 * Language packages: Python distributions (`*.dist-info/METADATA`,
 * `*.egg-info/PKG-INFO`, core metadata in RFC 822 form) and npm packages
 * (`node_modules/[@scope/]name/package.json`). Parsers take the file's text.
 */
import { allOf, classifierLicense, licenseExpression } from "./sbom-license.js";

export interface LangPackage {
  name: string;
  version: string;
  /** An SPDX expression. */
  license?: string;
  /** "Person: Name (email)" as SPDX writes an originator. */
  originator?: string;
  homepage?: string;
}

/** The SPDX form of a person: "Name (email)", from a name and/or an email or a "Name <email>" string. */
export function person(name?: string, email?: string): string | undefined {
  let n = name?.trim() || undefined;
  let e = email?.trim() || undefined;
  if (e !== undefined) {
    const m = /^\s*"?([^"<]*?)"?\s*<([^>]+)>/.exec(e);
    if (m) {
      n ??= m[1]!.trim() || undefined;
      e = m[2]!.trim();
    }
  } else if (n !== undefined) {
    const m = /^([^<]*?)\s*<([^>]+)>/.exec(n);
    if (m) [n, e] = [m[1]!.trim() || undefined, m[2]!.trim()];
  }
  if (n === undefined && e === undefined) return undefined;
  const who = (n ?? e!).replace(/[()]/g, "");
  return `Person: ${who}${n !== undefined && e !== undefined ? ` (${e})` : ""}`;
}

/** The header fields of core metadata (up to the first empty line); repeated fields keep every value. */
function coreMetadataHeaders(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let last: string[] | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line === "") break;
    if ((line[0] === " " || line[0] === "\t") && last !== undefined) {
      last[last.length - 1] += `\n${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    last = out.get(key) ?? [];
    last.push(line.slice(colon + 1).trim());
    out.set(key, last);
  }
  return out;
}

/** A short `License:` value that names a licence (not a whole licence text pasted in). */
function licenseName(v: string | undefined): string | undefined {
  if (v === undefined || v === "" || v.toUpperCase() === "UNKNOWN" || v.includes("\n") || v.length > 80) return undefined;
  return licenseExpression(v, "AND");
}

/** A Python distribution from its METADATA / PKG-INFO text; undefined without a name and a version. */
export function parsePythonMetadata(text: string): LangPackage | undefined {
  const h = coreMetadataHeaders(text);
  const one = (k: string) => h.get(k)?.[0];
  const name = one("name");
  const version = one("version");
  if (!name || !version) return undefined;
  const fromClassifiers = allOf((h.get("classifier") ?? []).map(classifierLicense).filter((l): l is string => l !== undefined));
  const expr = one("license-expression");
  return {
    name,
    version,
    license: (expr ? licenseExpression(expr, "AND") : undefined) ?? licenseName(one("license")) ?? fromClassifiers,
    originator: person(one("author"), one("author-email")) ?? person(one("maintainer"), one("maintainer-email")),
    homepage: one("home-page"),
  };
}

/** PEP 503's normalised project name, as purl's pypi type asks. */
export function pypiName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

type Json = Record<string, unknown>;
const str = (v: unknown) => (typeof v === "string" && v.trim() !== "" ? v.trim() : undefined);

function npmLicense(pkg: Json): string | undefined {
  const typeOf = (v: unknown) => str(v) ?? (v !== null && typeof v === "object" ? str((v as Json).type) : undefined);
  const one = typeOf(pkg.license);
  if (one !== undefined) return licenseExpression(one, "AND");
  if (!Array.isArray(pkg.licenses)) return undefined;
  // The old `licenses` array listed alternatives.
  const names = pkg.licenses.map(typeOf).filter((l): l is string => l !== undefined);
  return names.length === 0 ? undefined : licenseExpression(names.join(" OR "));
}

/**
 * An npm package from its package.json text; undefined without a name and a
 * version. Throws SyntaxError for text that is not JSON (the caller warns).
 */
export function parsePackageJson(text: string): LangPackage | undefined {
  const pkg = JSON.parse(text) as unknown;
  if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) return undefined;
  const p = pkg as Json;
  const name = str(p.name);
  const version = str(p.version);
  if (name === undefined || version === undefined) return undefined;
  const a = p.author;
  const author = typeof a === "string" ? person(a) : a !== null && typeof a === "object" ? person(str((a as Json).name), str((a as Json).email)) : undefined;
  return { name, version, license: npmLicense(p), originator: author, homepage: str(p.homepage) };
}

/** An npm name split as purl's npm type wants it: the scope (with its "@") as namespace. */
export function npmPurlName(name: string): { namespace?: string; name: string } {
  const m = /^(@[^/]+)\/(.+)$/.exec(name);
  return m ? { namespace: m[1], name: m[2]! } : { name };
}
