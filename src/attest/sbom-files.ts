/**
 * Which files of a layer the SBOM reads, and what each one says. A file is
 * read only when its path (or, for a Go binary, its mode) says it can hold
 * package metadata; a metadata file is buffered up to a cap (a larger one is
 * skipped with a warning), an executable is streamed through the Go build-info
 * scanner and never held.
 */
import type { TarEntry } from "../builder/fs/tar-reader.js";
import { GoBuildInfoScanner, type GoBuildInfo } from "./sbom-go.js";
import { parsePackageJson, parsePythonMetadata, person } from "./sbom-lang.js";
import { licenseExpression } from "./sbom-license.js";
import type { FoundPackage } from "./sbom-model.js";
import { parseApkInstalled, parseDebCopyright, parseDpkgStatus, parseOsRelease, type OsRelease } from "./sbom-os.js";

/** A package database (dpkg status, apk installed) is read whole up to this size. */
export const MAX_DB_FILE = 64 * 1024 * 1024;
/** Any other metadata file (METADATA, package.json, copyright, os-release). */
export const MAX_METADATA_FILE = 4 * 1024 * 1024;
/** Smaller executables cannot hold an ELF header and Go's build info. */
const MIN_EXECUTABLE = 128;

/** What one file in the final filesystem tells the SBOM. */
export type FileRecord =
  | { kind: "packages"; packages: FoundPackage[] }
  | { kind: "os-release"; os: OsRelease }
  | { kind: "copyright"; license?: string }
  | { kind: "doc-link"; target: string };

type Reader = "dpkg" | "apk" | "os-release" | "copyright" | "python" | "npm";

const NPM_MANIFEST = /(^|\/)node_modules\/(@[^/]+\/)?[^/.@][^/]*\/package\.json$/;

/** How a regular file at `path` (root-relative, no leading "/") is read, if at all. */
function readerFor(path: string): Reader | undefined {
  if (path === "var/lib/dpkg/status" || (/^var\/lib\/dpkg\/status\.d\/[^/]+$/.test(path) && !path.endsWith(".md5sums"))) return "dpkg";
  if (path === "lib/apk/db/installed" || path === "usr/lib/apk/db/installed") return "apk";
  if (path === "etc/os-release" || path === "usr/lib/os-release") return "os-release";
  if (/^usr\/share\/doc\/[^/]+\/copyright$/.test(path)) return "copyright";
  if (/\.dist-info\/METADATA$/.test(path) || /\.egg-info\/PKG-INFO$/.test(path)) return "python";
  if (NPM_MANIFEST.test(path)) return "npm";
  return undefined;
}

export interface ReadContext {
  layer: number;
  warn: (msg: string) => void;
}

/** The whole body as text, or undefined (with a warning) when it is over `max` bytes. */
async function bodyText(entry: TarEntry, path: string, max: number, ctx: ReadContext): Promise<string | undefined> {
  if (entry.header.size > max) {
    ctx.warn(`SBOM: skipped /${path} (${entry.header.size} bytes; metadata files over ${max} bytes are not read)`);
    return undefined;
  }
  const whole = entry.takeBuffered();
  if (whole !== undefined) return whole.toString("utf8");
  const parts: Buffer[] = [];
  for await (const c of entry.body) parts.push(c);
  return Buffer.concat(parts).toString("utf8");
}

function packagesOf(reader: Reader, text: string, path: string, ctx: ReadContext): FoundPackage[] {
  const at = { path: `/${path}`, layer: ctx.layer };
  switch (reader) {
    case "dpkg":
      return parseDpkgStatus(text).map((d) => ({
        type: "deb", name: d.name, version: d.version, arch: d.architecture, source: d.source, supplier: person(d.maintainer), ...at,
      }));
    case "apk":
      return parseApkInstalled(text).map((a) => ({
        type: "apk", name: a.name, version: a.version, arch: a.architecture, license: a.license === undefined ? undefined : licenseExpression(a.license), supplier: person(a.maintainer),
        source: a.origin === undefined ? undefined : { name: a.origin }, homepage: a.url, ...at,
      }));
    case "python": {
      const p = parsePythonMetadata(text);
      return p === undefined ? [] : [{ type: "pypi", ...p, ...at }];
    }
    default: {
      let p;
      try {
        p = parsePackageJson(text);
      } catch (e) {
        ctx.warn(`SBOM: skipped /${path}: ${(e as Error).message}`);
      }
      return p === undefined ? [] : [{ type: "npm", ...p, ...at }];
    }
  }
}

/** The packages of a Go binary: its main module, the modules it was built with, and the standard library. */
export function goPackages(info: GoBuildInfo, path: string, layer: number): FoundPackage[] {
  const at = { path: `/${path}`, layer };
  const out: FoundPackage[] = [];
  if (info.main !== undefined && info.main.path !== "") out.push({ type: "golang", name: info.main.path, version: info.main.version || undefined, ...at });
  else if (info.path !== undefined) out.push({ type: "golang", name: info.path, ...at });
  for (const d of info.deps) out.push({ type: "golang", name: d.path, version: d.version || undefined, ...at });
  out.push({ type: "golang", name: "stdlib", version: info.goVersion.split(" ")[0], ...at });
  return out;
}

async function goRecord(entry: TarEntry, path: string, layer: number): Promise<FileRecord | undefined> {
  const scanner = new GoBuildInfoScanner();
  const whole = entry.takeBuffered();
  if (whole !== undefined) scanner.push(whole);
  else for await (const c of entry.body) if (!scanner.push(c)) break;
  return scanner.result === undefined ? undefined : { kind: "packages", packages: goPackages(scanner.result, path, layer) };
}

/** What a tar entry at `path` (normalised, root-relative) contributes, reading its body only when it must. */
export async function recordOf(entry: TarEntry, path: string, ctx: ReadContext): Promise<FileRecord | undefined> {
  const h = entry.header;
  if (h.type === "symlink") return /^usr\/share\/doc\/[^/]+$/.test(path) ? { kind: "doc-link", target: h.linkname } : undefined;
  if (h.type !== "file") return undefined;
  const reader = readerFor(path);
  if (reader === undefined) return (h.mode & 0o111) !== 0 && h.size >= MIN_EXECUTABLE ? goRecord(entry, path, ctx.layer) : undefined;
  const text = await bodyText(entry, path, reader === "dpkg" || reader === "apk" ? MAX_DB_FILE : MAX_METADATA_FILE, ctx);
  if (text === undefined) return undefined;
  if (reader === "os-release") return { kind: "os-release", os: parseOsRelease(text) };
  if (reader === "copyright") return { kind: "copyright", license: parseDebCopyright(text) };
  return { kind: "packages", packages: packagesOf(reader, text, path, ctx) };
}
