/**
 * The one platform type of the code base: parsed once where a platform enters
 * (a --platform flag, FROM --platform, an image config), normalised as
 * containerd's `platforms.Parse` then `platforms.Normalize` do (what BuildKit and
 * buildx apply to every --platform: arm64/v8 is `linux/arm64` with no variant, arm
 * is arm/v7, x86_64 is amd64, i386 is 386, armhf is arm/v7, armel arm/v6),
 * formatted, matched, and selected from an index. Pure: no I/O.
 */
import { OcibuildError } from "../errors.js";
import type { Descriptor, ImageIndex } from "./manifest.js";

/** An OCI platform, as image configs and index entries carry it. */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** containerd's known operating systems (database.go, from Go's syslist). */
const KNOWN_OS: ReadonlySet<string> = new Set(["aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos"]);
/** containerd's known architectures, after normalisation. */
const KNOWN_ARCH: ReadonlySet<string> = new Set([
  "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips", "mipsle", "mips64", "mips64le",
  "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
]);
const COMPONENT = /^[A-Za-z0-9_.-]+$/;

function normalizeOs(os: string): string {
  const lower = os.toLowerCase();
  return lower === "macos" ? "darwin" : lower;
}

/** containerd's normalizeArch: aliases to GOARCH names, default and equivalent variants. */
function normalizeArch(arch: string, variant: string): [string, string] {
  const a = arch.toLowerCase();
  const v = variant.toLowerCase();
  switch (a) {
    case "i386":
      return ["386", ""];
    case "x86_64":
    case "x86-64":
    case "amd64":
      return ["amd64", v === "v1" ? "" : v];
    case "aarch64":
    case "arm64":
      if (v === "8" || v === "v8" || v === "v8.0") return ["arm64", ""];
      if (v === "9" || v === "9.0" || v === "v9.0") return ["arm64", "v9"];
      return ["arm64", v];
    case "armhf":
      return ["arm", "v7"];
    case "armel":
      return ["arm", "v6"];
    case "arm":
      if (v === "" || v === "7") return ["arm", "v7"];
      if (v === "5" || v === "6" || v === "8") return ["arm", `v${v}`];
      return ["arm", v];
  }
  return [a, v];
}

/** The normal form of a platform (containerd's Normalize): what is compared, formatted and written. */
export function normalizePlatform(p: Platform): Platform {
  const [architecture, variant] = normalizeArch(p.architecture, p.variant ?? "");
  const out: Platform = { architecture, os: normalizeOs(p.os) };
  if (variant !== "") out.variant = variant;
  if (p["os.version"]) out["os.version"] = p["os.version"];
  if (p["os.features"]?.length) out["os.features"] = [...new Set(p["os.features"])].sort();
  return out;
}

function invalid(s: string, why: string): OcibuildError {
  return new OcibuildError("PLATFORM_INVALID", `invalid platform "${s}": ${why}`, {
    hint: "write os/arch[/variant], e.g. linux/amd64, linux/arm64 or linux/arm/v7",
  });
}

/**
 * Parses "os/arch[/variant]", "arch" (the host's OS) or "os" (the host's
 * architecture) as containerd does, and returns the normal form. An unknown OS or
 * architecture is refused (containerd takes "linux/amd46" and fails later, when no
 * image or worker has it): a typo here would otherwise surface as a missing image.
 */
export function parsePlatform(s: string, host: Platform = hostPlatform()): Platform {
  if (s.includes("*")) throw invalid(s, "wildcards are not supported");
  const parts = s.split("/");
  if (parts.length > 3) throw invalid(s, "expected at most three parts, os/arch/variant");
  for (const part of parts) {
    if (!COMPONENT.test(part)) throw invalid(s, part === "" ? "a part is empty" : `"${part}" is not a valid part (letters, digits, _ . -)`);
  }
  let p: Platform;
  if (parts.length === 1) {
    const one = parts[0]!;
    if (KNOWN_OS.has(normalizeOs(one))) p = { ...host, os: one };
    else if (KNOWN_ARCH.has(normalizeArch(one, "")[0])) p = { os: host.os, architecture: one };
    else throw invalid(s, `"${one}" is neither a known operating system nor a known architecture`);
  } else {
    p = { os: parts[0]!, architecture: parts[1]!, ...(parts[2] !== undefined ? { variant: parts[2] } : {}) };
  }
  const n = normalizePlatform(p);
  if (!KNOWN_OS.has(n.os)) throw invalid(s, `unknown operating system "${parts[0]}"`);
  if (!KNOWN_ARCH.has(n.architecture)) throw invalid(s, `unknown architecture "${p.architecture}"`);
  return n;
}

/**
 * A comma-separated platform list (--platform linux/amd64,linux/arm64), each
 * parsed and normalised, duplicates dropped, as buildx does; "local" is the host's.
 * An empty item is refused. Empty or absent: the host's platform.
 */
export function parsePlatformList(value: string | undefined, host: Platform = hostPlatform()): Platform[] {
  if (value === undefined || value.trim() === "") return [host];
  const out: Platform[] = [];
  for (const item of value.split(",").map((x) => x.trim())) {
    if (item === "") throw invalid(value, "the list has an empty item");
    const p = item.toLowerCase() === "local" ? host : parsePlatform(item, host);
    if (!out.some((q) => formatPlatform(q) === formatPlatform(p))) out.push(p);
  }
  return out;
}

/** "os/arch[/variant]". */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Whether `have` is `want` once both are normalised (containerd's NewMatcher). */
export function platformMatches(want: Platform, have: Platform): boolean {
  const a = normalizePlatform(want);
  const b = normalizePlatform(have);
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? "") === (b.variant ?? "");
}

const NODE_ARCH: Record<string, string> = { x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64", loong64: "loong64" };

/** The platform this process runs on, normalised (BUILDPLATFORM). */
export function hostPlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  return normalizePlatform({ os: process.platform === "win32" ? "windows" : process.platform, architecture });
}

/** Pick the entry of `index` for `want`. Throws PLATFORM_NOT_FOUND listing what is there. */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  // The first match, in index order (attestation manifests are "unknown/unknown" and never match).
  const found = index.manifests.find((d) => d.platform && platformMatches(want, d.platform));
  if (found) return found;
  const available = index.manifests.filter((d) => d.platform && d.platform.os !== "unknown").map((d) => formatPlatform(d.platform!));
  throw new OcibuildError("PLATFORM_NOT_FOUND", `${what} has no image for platform ${formatPlatform(want)}`, {
    hint: available.length ? `available platforms: ${available.join(", ")}` : "the index lists no platforms",
    details: { available },
  });
}
