/**
 * Platforms: "linux/arm64/v8" parsing, normalisation and matching with
 * containerd's variant rules (arm64 means v8, arm means v7, amd64 has no
 * variant unless v2+ is asked), and selection from an index.
 */
import { OcibuildError } from "../../errors.js";
import type { Descriptor, ImageIndex, Platform } from "../manifest.js";

const ARCH_ALIASES: Record<string, string> = { x86_64: "amd64", x86: "386", i386: "386", aarch64: "arm64", armhf: "arm", armel: "arm" };

/** Parse "os/arch[/variant]" (or just "arch" meaning linux/arch). */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split("/");
  if (s.trim() === "" || parts.length > 3 || parts.some((p) => p === "" || !/^[A-Za-z0-9_.-]+$/.test(p))) {
    throw new OcibuildError("PLATFORM_INVALID", `invalid platform "${s}": expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  }
  const [os, arch, variant] = parts.length === 1 ? ["linux", parts[0]!, undefined] : [parts[0]!, parts[1]!, parts[2]];
  const p: Platform = { os: os.toLowerCase(), architecture: arch.toLowerCase() };
  if (variant !== undefined) p.variant = variant.toLowerCase();
  return p;
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Normalise architecture aliases and default variants for comparison. */
export function normalizePlatform(p: Platform): Platform {
  const architecture = ARCH_ALIASES[p.architecture] ?? p.architecture;
  let variant = p.variant;
  if (architecture === "arm64") {
    if (variant === undefined || variant === "" || variant === "8") variant = "v8";
  } else if (architecture === "arm") {
    if (variant === undefined || variant === "") variant = "v7";
    else if (/^[5-8]$/.test(variant)) variant = `v${variant}`;
  } else if (architecture === "amd64") {
    if (variant === "v1") variant = undefined;
  }
  const out: Platform = { os: p.os, architecture };
  if (variant) out.variant = variant;
  return out;
}

export function platformMatches(want: Platform, have: Platform): boolean {
  const a = normalizePlatform(want);
  const b = normalizePlatform(have);
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? "") === (b.variant ?? "");
}

/** The platform this process runs on, as an OCI platform. */
export function hostPlatform(): Platform {
  const map: Record<string, string> = { x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
  const architecture = map[process.arch] ?? process.arch;
  return normalizePlatform({ os: process.platform === "win32" ? "windows" : process.platform, architecture });
}

/** Pick the entry of `index` for `want`. Throws PLATFORM_NOT_FOUND listing what is there. */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter((d) => d.platform && platformMatches(want, d.platform));
  // The first match, in index order (attestation manifests are "unknown/unknown" and never match).
  const found = candidates[0];
  if (found) return found;
  const available = index.manifests
    .filter((d) => d.platform && d.platform.os !== "unknown")
    .map((d) => formatPlatform(d.platform!));
  throw new OcibuildError("PLATFORM_NOT_FOUND", `${what} has no image for platform ${formatPlatform(want)}`, {
    hint: available.length ? `available platforms: ${available.join(", ")}` : "the index lists no platforms",
    details: { available },
  });
}
