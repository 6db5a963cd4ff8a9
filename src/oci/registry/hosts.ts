/** Registry host names: loopback detection and the host a registry name or mirror URL means. */

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, "").replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** "docker.io" -> "registry-1.docker.io"; a mirror URL "https://m.example/" -> "m.example". */
export function hostOf(registry: string): string {
  if (registry === "docker.io") return "registry-1.docker.io";
  return registry.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
}
