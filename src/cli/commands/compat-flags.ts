/**
 * kaniko's and docker build's flags that ocibuild takes for what they mean here: an
 * alias mapped onto an ocibuild option, a no-op (what it asks for is already how
 * ocibuild works, or means nothing without a container or a daemon), or a refusal that
 * names what to use instead. None ends in a bare "unknown flag". The table in
 * docs/cli.md lists each with its status; test/cli/flag-table.test.ts walks it.
 */
import { OcibuildError } from "../../errors.js";
import type { BuildOptions } from "../../api.js";
import type { RegistryOptions } from "../../oci/registry/types.js";
import { canonicalRegistry, parseReference } from "../../oci/reference.js";
import { type FlagSpec, type ParsedFlags, bool, list, str } from "../flags.js";

const s = (name: string, valueName: string, description: string, extra: Partial<FlagSpec> = {}): FlagSpec => ({ names: [name], type: "string", valueName, description, ...extra });
const b = (name: string, description: string): FlagSpec => ({ names: [name], type: "boolean", description });

/** Flags accepted for compatibility (aliases and no-ops); each is described for --help. */
export const COMPAT_SPECS: FlagSpec[] = [
  b("cache", "kaniko: --cache=true is the default here (caching is always on); --cache=false is --no-cache --no-cache-write"),
  b("cache-copy-layers", "kaniko: no-op (COPY steps are always cached)"),
  b("cache-run-layers", "kaniko: no-op (RUN steps are always cached)"),
  b("compressed-caching", "kaniko: no-op (cache entries are the compressed layers themselves)"),
  b("no-push-cache", "kaniko: do not push cache entries to --cache-repo (it is still read)"),
  b("insecure", "kaniko: allow plain HTTP (and unverified TLS) for the -t/--destination registries"),
  b("insecure-pull", "kaniko: allow plain HTTP (and unverified TLS) for every registry"),
  b("skip-tls-verify-pull", "kaniko: do not verify registries' TLS certificates (every registry, as --skip-tls-verify)"),
  s("push-retry", "N", "kaniko: retry a failed registry request up to N times (at least the default 4)"),
  s("image-download-retry", "N", "kaniko: as --push-retry (one retry policy for pulls and pushes)"),
  s("image-fs-extract-retry", "N", "kaniko: no-op (layers are extracted from local files)"),
  s("registry-map", "REG=MIRROR[;...]", "kaniko: pull REG's images from MIRROR first (then from REG)", { repeatable: true }),
  b("skip-default-registry-fallback", "kaniko: with mirrors, never fall back to the original registry"),
  s("registry-client-cert", "HOST=CERT,KEY", "kaniko: a client certificate and key (PEM) for mutual TLS with HOST", { repeatable: true }),
  s("context-sub-path", "PATH", "kaniko: build the subdirectory PATH of the context (a directory or a git repository)"),
  s("git", "branch=B,...", "kaniko: the branch a git context checks out when its URL names no ref (single-branch accepted; recurse-submodules, insecure-skip-tls only =false)"),
  s("verbosity", "LEVEL", "kaniko: no-op (panic..trace); ocibuild's output is set by --progress and --debug", { short: ["v"] }),
  s("log-format", "text|color|json", "kaniko: no-op; use --progress plain|tty|json"),
  b("log-timestamp", "kaniko: no-op (--progress json events carry times)"),
  b("cleanup", "kaniko: no-op (ocibuild never writes to the host's root filesystem)"),
  b("force", "kaniko: no-op (ocibuild builds outside containers too)"),
  b("single-snapshot", "kaniko: no-op with a warning: ocibuild makes one layer per step"),
  s("snapshot-mode", "full|redo|time", "kaniko: no-op (ocibuild compares whole files)"),
  b("use-new-run", "kaniko: no-op (RUN never snapshots the whole filesystem)"),
  b("skip-unused-stages", "kaniko: no-op (stages the target does not need are always skipped)"),
  b("ignore-var-run", "kaniko: no-op (the image's /var/run is the image's; the host's never enters it)"),
  s("ignore-path", "PATH", "kaniko: no-op with a warning (host paths never enter a snapshot)", { repeatable: true }),
  s("kaniko-dir", "DIR", "kaniko: no-op with a warning; ocibuild's working files are under --cache-dir"),
  s("compression", "gzip|zstd|uncompressed", "kaniko: compression of new layers (default gzip; as buildx's --output compression=)"),
  b("rm", "docker: no-op (no intermediate containers)"),
  b("force-rm", "docker: no-op (no intermediate containers)"),
  b("compress", "docker: no-op (the context is not sent anywhere)"),
  b("disable-content-trust", "docker: no-op (default true in docker build; no content trust here)"),
];

/** Flags parsed only to be refused, each with what to do instead. */
export const REFUSED: Record<string, { spec: Omit<FlagSpec, "names">; why: string }> = {
  "cache-from": { spec: { type: "string", repeatable: true, valueName: "SRC" }, why: "use --cache-repo REPO (and --cache-dir DIR)" },
  "cache-to": { spec: { type: "string", repeatable: true, valueName: "DST" }, why: "use --cache-repo REPO (and --cache-dir DIR)" },
  load: { spec: { type: "boolean" }, why: "ocibuild has no daemon to load into; write --output docker-archive:FILE and run `docker load -i FILE`" },
  "push-ignore-immutable-tag-errors": { spec: { type: "boolean" }, why: "a tag the registry will not overwrite fails the push; push to a new tag, or use --no-push with --digest-file" },
  builder: { spec: { type: "string", valueName: "NAME" }, why: "use --executor buildkit --buildkit-addr ADDR to run RUN steps on a BuildKit daemon" },
  "cgroup-parent": { spec: { type: "string", valueName: "PATH" }, why: "run ocibuild itself in that cgroup (systemd-run --slice=...); RUN steps stay in it" },
  squash: { spec: { type: "boolean" }, why: "copy the result into a fresh stage instead: FROM scratch + COPY --from=STAGE / /" },
  memory: { spec: { type: "string", short: ["m"], valueName: "BYTES" }, why: "limit ocibuild itself (systemd-run -p MemoryMax=BYTES ocibuild ...); RUN steps inherit it" },
  "memory-swap": { spec: { type: "string", valueName: "BYTES" }, why: "limit ocibuild itself (systemd-run -p MemorySwapMax=BYTES ocibuild ...)" },
  "cpu-shares": { spec: { type: "string", valueName: "N" }, why: "limit ocibuild itself (systemd-run -p CPUWeight=N ocibuild ...)" },
  "cpu-period": { spec: { type: "string", valueName: "N" }, why: "limit ocibuild itself (systemd-run -p CPUQuota=P% ocibuild ...)" },
  "cpu-quota": { spec: { type: "string", valueName: "N" }, why: "limit ocibuild itself (systemd-run -p CPUQuota=P% ocibuild ...)" },
  "cpuset-cpus": { spec: { type: "string", valueName: "CPUS" }, why: "run ocibuild under taskset -c CPUS" },
  "cpuset-mems": { spec: { type: "string", valueName: "MEMS" }, why: "run ocibuild under numactl --membind=MEMS" },
  "security-opt": { spec: { type: "string", repeatable: true, valueName: "OPT" }, why: "RUN steps run with runc's default masks; --allow security.insecure and RUN --security=insecure lift them" },
  resource: { spec: { type: "string", repeatable: true, valueName: "KEY=VALUE" }, why: "limit ocibuild itself (systemd-run -p MemoryMax=2G -p CPUQuota=50% ocibuild ...); RUN steps inherit it, and --ulimit sets per-process limits" },
  policy: { spec: { type: "string", repeatable: true, valueName: "OPTS" }, why: "ocibuild has no source policies; pin bases by digest (FROM image@sha256:...) and use --registry-map to control where they come from" },
  isolation: { spec: { type: "string", valueName: "MODE" }, why: "RUN steps always run in a bubblewrap sandbox (or on BuildKit with --executor buildkit)" },
};

export const REFUSED_SPECS: FlagSpec[] = Object.entries(REFUSED).map(([name, r]) => ({ names: [name], ...r.spec, description: `(refused) ${r.why}` }));

export function rejectRefused(p: ParsedFlags): void {
  for (const [name, { why }] of Object.entries(REFUSED)) {
    const v = p.values[name];
    if (v === undefined || v === false) continue;
    throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `flag --${name} is not supported: ${why}`, { details: { flag: `--${name}` } });
  }
}

/** kaniko's --registry-map values: REG=MIRROR, several separated by ';', repeatable. */
export function parseRegistryMap(values: string[]): Record<string, string[]> {
  const map: Record<string, string[]> = {};
  for (const item of values.flatMap((v) => v.split(";")).filter((x) => x !== "")) {
    const eq = item.indexOf("=");
    const from = item.slice(0, eq).trim().toLowerCase();
    const to = item.slice(eq + 1).trim();
    if (eq <= 0 || to === "") throw new OcibuildError("USAGE_BAD_VALUE", `--registry-map takes REGISTRY=MIRROR, not "${item}"`, { details: { flag: "--registry-map" } });
    if (to.replace(/^[a-z]+:\/\//i, "").includes("/")) {
      throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `--registry-map ${item}: a mirror with a repository path is not supported`, { hint: "map to a registry host[:port] that serves the same repository names" });
    }
    (map[canonicalRegistry(from)] ??= []).push(to);
  }
  return map;
}

function retryCount(p: ParsedFlags, flag: string): number | undefined {
  const v = str(p, flag);
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v)) throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} takes a number of retries, not "${v}"`, { details: { flag: `--${flag}` } });
  return Number(v);
}

function checkChoice(p: ParsedFlags, flag: string, allowed: string[]): string | undefined {
  const v = str(p, flag);
  if (v !== undefined && !allowed.includes(v.toLowerCase())) {
    throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} takes ${allowed.join(", ")}, not "${v}"`, { details: { flag: `--${flag}` } });
  }
  return v?.toLowerCase();
}

/** Registry options from kaniko's registry flags, on top of the shared ones. */
export function compatRegistryOptions(p: ParsedFlags, opts: RegistryOptions, pushTargets: string[]): RegistryOptions {
  const out = { ...opts };
  if (bool(p, "insecure")) {
    const hosts = pushTargets.map((t) => parseReference(t).registry);
    out.insecureRegistries = [...(out.insecureRegistries ?? []), ...new Set(hosts)];
  }
  if (bool(p, "insecure-pull")) out.insecureAll = true;
  if (bool(p, "skip-tls-verify-pull")) out.skipTlsVerify = true;
  const retries = Math.max(retryCount(p, "push-retry") ?? 0, retryCount(p, "image-download-retry") ?? 0);
  // The client already retries 4 times (5 attempts); a larger count raises it, a smaller one never lowers it.
  if (retries + 1 > 5) out.retry = { ...out.retry, attempts: retries + 1 };
  retryCount(p, "image-fs-extract-retry");
  const map = parseRegistryMap(list(p, "registry-map"));
  if (Object.keys(map).length > 0) out.registryMap = map;
  if (bool(p, "skip-default-registry-fallback")) out.skipDefaultRegistryFallback = true;
  const clientCerts = list(p, "registry-client-cert").map(parseClientCert);
  if (clientCerts.length > 0) out.registryClientCerts = Object.fromEntries(clientCerts);
  return out;
}

function parseClientCert(v: string): [string, { cert: string; key: string }] {
  const m = /^([^=]+)=([^,]+),([^,]+)$/.exec(v);
  if (!m) throw new OcibuildError("USAGE_BAD_VALUE", `--registry-client-cert takes HOST=CERT,KEY, not "${v}"`, { details: { flag: "--registry-client-cert" } });
  return [m[1]!, { cert: m[2]!, key: m[3]! }];
}

/** Library options from the accepted no-op and alias flags; warns where a user might expect an effect. */
export function applyCompatFlags(p: ParsedFlags, options: BuildOptions, warn: (message: string) => void): void {
  if (p.values.cache === false) {
    options.noCache = true;
    options.noCacheWrite = true;
  }
  if (bool(p, "no-push-cache")) options.noCacheRepoWrite = true;
  checkChoice(p, "snapshot-mode", ["full", "redo", "time"]);
  checkChoice(p, "log-format", ["text", "color", "json"]);
  checkChoice(p, "verbosity", ["panic", "fatal", "error", "warn", "info", "debug", "trace"]);
  if (str(p, "log-format")?.toLowerCase() === "json") warn("--log-format json changes nothing here; --progress json prints the build's events as JSON lines");
  if (bool(p, "single-snapshot")) warn("--single-snapshot is ignored: ocibuild makes one layer per step (and caches each)");
  for (const path of list(p, "ignore-path")) warn(`--ignore-path ${path} is ignored: RUN sees only the image's filesystem, so no host path enters a snapshot`);
  const kanikoDir = str(p, "kaniko-dir");
  if (kanikoDir !== undefined) warn(`--kaniko-dir ${kanikoDir} is ignored: ocibuild keeps its working files under --cache-dir`);
}
