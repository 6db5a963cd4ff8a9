/**
 * Registry host names: loopback detection, the host a registry name or mirror URL
 * means, and what the options allow for a host (plain HTTP, unverified TLS).
 */
import type { RegistryOptions } from "./types.js";

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, "").replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** "docker.io" -> "registry-1.docker.io"; a mirror URL "https://m.example/" -> "m.example". */
export function hostOf(registry: string): string {
  if (registry === "docker.io") return "registry-1.docker.io";
  return registry.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
}

function inList(list: string[] | undefined, host: string): boolean {
  return (list ?? []).some((h) => hostOf(h).toLowerCase() === host.toLowerCase());
}

/** May this host be spoken to over plain HTTP? Loopback always may (like Docker); else only when the options say so. */
export function mayUseHttp(opts: RegistryOptions, host: string): boolean {
  const mirrors = [...(opts.registryMirrors ?? []), ...Object.values(opts.registryMap ?? {}).flat()];
  return opts.insecureAll === true || isLoopbackHost(host) || inList(opts.insecureRegistries, host) || mirrors.some((m) => m.startsWith("http://") && hostOf(m) === host);
}

/** Is this host's TLS certificate left unverified? */
export function skipsVerify(opts: RegistryOptions, host: string): boolean {
  return opts.skipTlsVerify === true || opts.insecureAll === true || inList(opts.skipTlsVerifyRegistries, host) || inList(opts.insecureRegistries, host);
}
