/**
 * Distribution package databases: dpkg's status file (and distroless's
 * `/var/lib/dpkg/status.d/*`), Debian's machine-readable copyright files (DEP-5),
 * Alpine's `/lib/apk/db/installed`, and `/etc/os-release`. Each parser takes
 * the file's text and returns plain values; nothing here reads a file.
 */
import { allOf, licenseExpression } from "./sbom-license.js";

/** One deb822 paragraph: field names lower-cased, continuation lines joined with "\n". */
export type Stanza = Map<string, string>;

/** Paragraphs of a deb822 file (dpkg status, copyright). */
export function deb822(text: string): Stanza[] {
  const out: Stanza[] = [];
  let cur: Stanza = new Map();
  let last: string | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (cur.size > 0) out.push(cur);
      cur = new Map();
      last = undefined;
    } else if (line.startsWith("#")) {
      continue;
    } else if ((line[0] === " " || line[0] === "\t") && last !== undefined) {
      cur.set(last, `${cur.get(last)}\n${line.trim()}`);
    } else {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      last = line.slice(0, colon).trim().toLowerCase();
      cur.set(last, line.slice(colon + 1).trim());
    }
  }
  if (cur.size > 0) out.push(cur);
  return out;
}

export interface DebPackage {
  name: string;
  version: string;
  architecture?: string;
  /** The source package, when it differs from the binary package's name or version. */
  source?: { name: string; version?: string };
  maintainer?: string;
}

/** dpkg's states for a package whose files are on disk ("config-files" and "not-installed" are not). */
const PRESENT: ReadonlySet<string> = new Set(["installed", "half-installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending"]);

/** The installed packages of a dpkg status file. A distroless status.d file has no Status field: all of it counts. */
export function parseDpkgStatus(text: string): DebPackage[] {
  const out: DebPackage[] = [];
  for (const s of deb822(text)) {
    const name = s.get("package");
    const version = s.get("version");
    if (!name || !version) continue;
    const status = s.get("status");
    if (status !== undefined && !PRESENT.has(status.split(/\s+/)[2] ?? "")) continue;
    const src = /^(\S+)(?:\s+\((\S+)\))?$/.exec(s.get("source") ?? "");
    out.push({
      name,
      version,
      architecture: s.get("architecture"),
      source: src ? { name: src[1]!, version: src[2] } : undefined,
      maintainer: s.get("maintainer"),
    });
  }
  return out;
}

const DEP5_FORMAT = /^https?:\/\/(www\.)?debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\/?$/;

/**
 * The licences a machine-readable (DEP-5) copyright file declares: the first
 * line of every `License:` field, as one SPDX expression (all of them ANDed: the
 * package holds files under each). Undefined for a free-form copyright file.
 */
export function parseDebCopyright(text: string): string | undefined {
  const stanzas = deb822(text);
  if (!DEP5_FORMAT.test(stanzas[0]?.get("format") ?? "")) return undefined;
  const exprs: string[] = [];
  for (const s of stanzas) {
    const field = s.get("license");
    if (field === undefined) continue;
    const short = field.split("\n")[0]!.trim();
    const expr = short === "" ? undefined : licenseExpression(short, "AND");
    if (expr !== undefined) exprs.push(expr);
  }
  return allOf(exprs);
}

export interface ApkPackage {
  name: string;
  version: string;
  architecture?: string;
  license?: string;
  origin?: string;
  maintainer?: string;
  url?: string;
}

/** Alpine's installed database: paragraphs of `K:value` lines (P name, V version, A arch, L licence, o origin, m maintainer, U url). */
export function parseApkInstalled(text: string): ApkPackage[] {
  const out: ApkPackage[] = [];
  for (const para of text.split(/\n[ \t]*\n/)) {
    const f = new Map<string, string>();
    for (const line of para.split("\n")) {
      if (line.length >= 2 && line[1] === ":" && !f.has(line[0]!)) f.set(line[0]!, line.slice(2));
    }
    const name = f.get("P");
    const version = f.get("V");
    if (!name || !version) continue;
    out.push({ name, version, architecture: f.get("A"), license: f.get("L"), origin: f.get("o"), maintainer: f.get("m"), url: f.get("U") });
  }
  return out;
}

export interface OsRelease {
  id?: string;
  idLike?: string[];
  versionId?: string;
  versionCodename?: string;
  prettyName?: string;
}

/** os-release(5): KEY=value lines, values optionally quoted with shell escapes. */
export function parseOsRelease(text: string): OsRelease {
  const v = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let val = m[2]!;
    const q = val[0];
    if ((q === '"' || q === "'") && val.endsWith(q) && val.length >= 2) val = val.slice(1, -1);
    v.set(m[1]!, q === '"' ? val.replace(/\\(["\\$`])/g, "$1") : val);
  }
  return {
    id: v.get("ID")?.toLowerCase(),
    idLike: v.get("ID_LIKE")?.toLowerCase().split(/\s+/).filter(Boolean),
    versionId: v.get("VERSION_ID"),
    versionCodename: v.get("VERSION_CODENAME"),
    prettyName: v.get("PRETTY_NAME"),
  };
}

/** purl's distro qualifier: `debian-12`, `alpine-3.19.1`, or the codename / bare id when there is no version. */
export function distroQualifier(os: OsRelease | undefined): string | undefined {
  if (os?.id === undefined) return undefined;
  const v = os.versionId ?? os.versionCodename;
  return v === undefined ? os.id : `${os.id}-${v}`;
}
