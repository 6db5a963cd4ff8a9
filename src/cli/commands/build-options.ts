/**
 * `ocibuild build` flags -> library BuildOptions, with docker build, buildx and
 * kaniko spellings. Pure apart from reading stdin for `-f -` and looking for a
 * relative -f (kaniko's rule; both in context-flags.ts): tests call parseBuildArgs directly. A flag we recognise but do not support fails with
 * USAGE_UNSUPPORTED_FLAG naming it; an unknown flag fails with
 * USAGE_UNKNOWN_FLAG (both exit 2): nothing is silently ignored.
 */
import { resolve } from "node:path";
import { parseSecretFlag, parseSshFlag } from "./secret-flags.js";
import { EXECUTOR_FLAGS, executorOptionsFrom } from "./executor-flags.js";
import { ATTEST_FLAGS, attestOptionsFrom } from "./attest-flags.js";
import { hostPlatform, parsePlatformList } from "../../oci/platform.js";
import { OcibuildError } from "../../errors.js";
import type { BuildOptions } from "../../api.js";
import type { BuildOutput } from "../../builder/output.js";
import { layerOptions, parseOutput } from "./output-flags.js";
import { SANDBOX_FLAGS, applySandboxFlags } from "./sandbox-flags.js";
import { COMPAT_SPECS, REFUSED_SPECS, applyCompatFlags, compatRegistryOptions, rejectRefused } from "./compat-flags.js";
import { parseReference } from "../../oci/reference.js";
import { type FlagSpec, type ParsedFlags, bool, list, parseDuration, parseFlags, parseSize, str } from "../flags.js";
import type { CliIO } from "../io.js";
import { contextOptions } from "./context-flags.js";
import { REGISTRY_FLAGS, registryOptionsFrom } from "./copy.js";

/** ocibuild's own build flags (with the docker/kaniko spellings that are plain aliases). */
export const BUILD_MAIN_SPECS: FlagSpec[] = [
  { names: ["tag", "destination"], short: ["t", "d"], type: "string", repeatable: true, valueName: "REF", description: "Name and tag the image (and push it there unless --no-push)" },
  { names: ["file", "dockerfile"], short: ["f"], type: "string", valueName: "PATH", description: "Dockerfile path (default CONTEXT/Dockerfile; - reads stdin)" },
  { names: ["context"], short: ["c"], type: "string", valueName: "CONTEXT", description: "Build context: a directory (or dir://DIR), tar://ARCHIVE, a git URL (URL.git#REF:SUBDIR), or - (a tar or a Dockerfile on stdin); or the positional CONTEXT" },
  { names: ["build-context"], type: "string", repeatable: true, valueName: "NAME=VALUE", description: "A named context for FROM NAME, COPY --from=NAME, RUN --mount from=NAME: a directory, a git URL, tar://ARCHIVE, docker-image://REF or oci-layout://DIR[:TAG]" },
  { names: ["build-arg"], type: "string", repeatable: true, valueName: "KEY[=VALUE]", description: "Set a build argument (no value: taken from the environment)" },
  { names: ["target"], type: "string", valueName: "STAGE", description: "Build this stage" },
  { names: ["platform", "custom-platform"], type: "string", valueName: "OS/ARCH[/VARIANT]", description: "Target platform (default: the host's)" },
  { names: ["label"], type: "string", repeatable: true, valueName: "KEY=VALUE", description: "Add a label to the image" },
  { names: ["no-push"], type: "boolean", description: "Build (and write --output) without pushing" },
  { names: ["push"], type: "boolean", description: "Push to every -t (the default when tags are given; buildx spelling)" },
  { names: ["skip-push-permission-check"], type: "boolean", description: "kaniko: do not check before building that the credentials may push to every -t" },
  { names: ["output"], short: ["o"], type: "string", repeatable: true, valueName: "OUT", description: "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, type=oci|docker,dest=PATH[,tar=false][,name=REF], type=registry[,name=REF]" },
  { names: ["oci-layout-path"], type: "string", valueName: "DIR", description: "kaniko: also write an OCI layout to DIR (tagged with the first -t's tag, or latest)" },
  { names: ["tar-path"], type: "string", valueName: "FILE", description: "kaniko: also write a docker-archive tar (docker load) to FILE" },
  { names: ["cache-dir"], type: "string", valueName: "DIR", description: "Cache directory (default $XDG_CACHE_HOME/ocibuild or ~/.cache/ocibuild)" },
  { names: ["no-cache"], type: "boolean", description: "Do not reuse cached steps (build every step; still write the cache)" },
  { names: ["no-cache-filter"], type: "string", repeatable: true, valueName: "STAGE[,STAGE]", description: "Rebuild these stages' steps (names or indexes) without cache lookups; other stages use the cache" },
  { names: ["no-cache-write"], type: "boolean", description: "Do not write cache entries" },
  { names: ["cache-repo"], type: "string", valueName: "REPO", description: "Also keep cache entries in this registry repository (shared by CI runners)" },
  { names: ["cache-ttl"], type: "string", valueName: "DURATION", description: "Ignore cache entries older than this (e.g. 336h, 7d; default two weeks), and base tags resolved longer ago" },
  { names: ["pull"], type: "boolean", description: "Resolve every base image tag in its registry (default: reuse a resolution this cache made within --cache-ttl)" },
  { names: ["call"], type: "string", valueName: "build|check", description: "buildx: check runs BuildKit's build checks on the Dockerfile and builds nothing" },
  { names: ["check"], type: "boolean", description: "buildx: --call check" },
  { names: ["dry-run"], type: "boolean", description: "Report which steps would be cached or rebuilt, and why, executing nothing" },
  { names: ["digest-file"], type: "string", valueName: "FILE", description: "Write the image digest to FILE" },
  { names: ["image-name-with-digest-file"], type: "string", valueName: "FILE", description: "Write NAME@DIGEST for each -t, one per line" },
  { names: ["image-name-tag-with-digest-file"], type: "string", valueName: "FILE", description: "Write NAME:TAG@DIGEST for each -t, one per line" },
  { names: ["iidfile"], type: "string", valueName: "FILE", description: "Write the image ID (the config digest; for several platforms the index digest) to FILE" },
  { names: ["metadata-file"], type: "string", valueName: "FILE", description: "Write build metadata (digest, descriptor, steps, cache) as JSON" },
  { names: ["progress"], type: "string", valueName: "MODE", description: "auto, tty, plain, json, rawjson (= json), quiet or none (= -q) (auto: tty on a terminal, else plain)" },
  { names: ["quiet"], short: ["q"], type: "boolean", description: "Print only the digest" },
  { names: ["reproducible"], type: "boolean", description: "Clamp timestamps to 0 unless SOURCE_DATE_EPOCH is set" },
  { names: ["compression-level"], type: "string", valueName: "LEVEL", description: "Level for new layers: gzip 0-9 (default 6), zstd 0-22 (default 3)" },
  { names: ["max-layer-size"], type: "string", valueName: "SIZE", description: "Fail when a base image layer decompresses to more than SIZE (e.g. 4g, 512m; default: no limit)" },
  { names: ["network"], type: "string", valueName: "MODE", description: "Default network for RUN: default (its own namespace, outbound through slirp4netns), none, or host (needs --allow network.host); RUN --network overrides" },
  { names: ["secret"], type: "string", repeatable: true, valueName: "id=ID,src=PATH|env=VAR", description: "A secret for RUN --mount=type=secret (never stored in the image or cache)" },
  { names: ["ssh"], type: "string", repeatable: true, valueName: "ID[=SOCKET|KEY[,KEY]]", description: "An ssh agent for RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)" },
  { names: ["allow"], type: "string", repeatable: true, valueName: "ENTITLEMENT", description: "Allow security.insecure (RUN --security=insecure) or network.host (--network=host, RUN --network=host)" },
  { names: ["help"], short: ["h"], type: "boolean", description: "Show this help" },
  // Read by main() for every command; listed so that build --help shows it.
  { names: ["debug"], short: ["D"], type: "boolean", description: "Show stack traces with errors (every command)" },
  ...REGISTRY_FLAGS.filter((f) => f.names[0] !== "help"),
  ...EXECUTOR_FLAGS,
  ...SANDBOX_FLAGS,
  ...ATTEST_FLAGS,
];

/** --help's sections after the main flags. */
export const BUILD_HELP_SECTIONS: [string, FlagSpec[]][] = [
  ["kaniko and docker flags accepted for compatibility", COMPAT_SPECS],
  ["kaniko and docker flags refused, with what to use instead", REFUSED_SPECS],
];

/** Every flag `ocibuild build` parses. */
export const BUILD_SPECS: FlagSpec[] = [...BUILD_MAIN_SPECS, ...COMPAT_SPECS, ...REFUSED_SPECS];

/** The flags `ocibuild --help` shows. */
export const COMMON_BUILD_FLAGS = ["tag", "file", "context", "build-arg", "target", "platform", "no-push", "output", "cache-dir", "cache-repo", "progress", "quiet"];

export const BUILD_USAGE = `Usage: ocibuild [build] [flags] CONTEXT

Builds the image described by CONTEXT/Dockerfile (or -f) without a daemon and
pushes it to every -t/--destination, or writes it with --output. docker build,
buildx and kaniko flag spellings are accepted.`;

export const BUILD_EXAMPLES = [
  "ocibuild -t registry.example.com/team/app:v1 .",
  "ocibuild -f docker/Dockerfile --build-arg VERSION=1.2 --target app -t 127.0.0.1:5000/app:dev .",
  "ocibuild --no-push --output oci:./out:dev .",
  "ocibuild --no-push -t app:v1 --output docker-archive:app.tar . && docker load -i app.tar",
  "ocibuild -o type=oci,dest=app.oci.tar -t app:v1 --no-push .",
  "ocibuild --context dir:///workspace --destination registry.lan/app:v1 --digest-file /workspace/digest   # kaniko spelling",
  "ocibuild --progress=json -t 127.0.0.1:5000/app:ci . > events.jsonl",
];

/** What the build command will do: library options plus the files the CLI writes afterwards. */
export interface BuildInvocation {
  help: boolean;
  /** buildx's --call: "check" lints the Dockerfile instead of building. */
  call?: "check";
  options: BuildOptions;
  progress: "auto" | "tty" | "plain" | "json";
  quiet: boolean;
  files: {
    digest?: string;
    imageNameWithDigest?: string;
    imageNameTagWithDigest?: string;
    iid?: string;
    metadata?: string;
  };
}

function parseKeyValues(values: string[], flag: string, env?: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const i = v.indexOf("=");
    if (i < 0) {
      if (env === undefined) throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} "${v}" must be KEY=VALUE`);
      const fromEnv = env[v];
      if (fromEnv !== undefined) out[v] = fromEnv;
      continue;
    }
    if (i === 0) throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} "${v}" has an empty key`);
    out[v.slice(0, i)] = v.slice(i + 1);
  }
  return out;
}

/** buildx's --call (and --check): build (the default) or check; outline and targets get a pointer. */
function callFrom(p: ParsedFlags): "check" | undefined {
  const v = str(p, "call") ?? (bool(p, "check") ? "check" : "build");
  if (v === "build") return undefined;
  if (v === "check" || v === "lint") return "check";
  const instead: Record<string, string> = { outline: "ocibuild parse prints the Dockerfile's instructions; the ARGs are in it", targets: "ocibuild parse lists every FROM ... AS name" };
  throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `flag --call=${v} is not supported: ${instead[v] ?? "use --call build or --call check"}`, { details: { flag: "--call" } });
}

/** Errors from parsing a flag's value (a bad reference or layout name) are usage errors. */
function asUsage<T>(f: () => T, flag: string): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof OcibuildError && !e.code.startsWith("USAGE")) {
      throw new OcibuildError("USAGE_BAD_VALUE", `${flag}: ${e.message}`, { hint: e.hint, cause: e });
    }
    throw e;
  }
}

function rejectUnsupported(p: ParsedFlags): void {
  rejectRefused(p);
  const network = str(p, "network");
  if (network !== undefined && network !== "default" && network !== "none" && network !== "host") {
    throw new OcibuildError("USAGE_BAD_VALUE", `--network=${network}: use default, none or host`, { details: { flag: "--network" } });
  }
  const allow = list(p, "allow");
  for (const a of allow) {
    if (a !== "security.insecure" && a !== "network.host") throw new OcibuildError("USAGE_BAD_VALUE", `--allow ${a}: known entitlements are security.insecure and network.host`);
  }
  if (network === "host" && !allow.includes("network.host")) {
    throw new OcibuildError("USAGE_ENTITLEMENT_REQUIRED", "--network=host needs the network.host entitlement", {
      details: { flag: "--network" },
      hint: "add --allow network.host if you trust this Dockerfile with the host's network (its loopback services included)",
    });
  }
}

/** Parses `ocibuild build` arguments against the injected environment and working directory. */
export async function parseBuildArgs(args: string[], io: CliIO, signal?: AbortSignal): Promise<BuildInvocation> {
  const p = parseFlags(args, BUILD_SPECS);
  if (bool(p, "help")) return { help: true, options: { context: io.cwd }, progress: "auto", quiet: false, files: {} };
  // The flags are checked in this order, so that of two mistakes the same one is reported first.
  rejectUnsupported(p);
  const cwd = io.cwd;
  const warn = (m: string) => io.stderr.write(`warning: ${m}\n`);
  const sources = await contextOptions(p, io, warn, signal);
  const { progress, silent } = progressFrom(p);
  const tags = list(p, "tag");
  const outputs = outputsFrom(p, tags, cwd);
  const image = imageOptions(p, io.env);
  checkPushFlags(p, tags, outputs);
  const files = resultFiles(p, tags, cwd);
  const registryOutputs = outputs.filter((o) => o.type === "registry");
  const options: BuildOptions = {
    ...sources,
    tags,
    buildArgs: parseKeyValues(list(p, "build-arg"), "build-arg", io.env),
    labels: parseKeyValues(list(p, "label"), "label"),
    push: !bool(p, "no-push") && tags.length > 0,
    outputs,
    // A build reports blob transfers as its own events (push lines, the live view), so the
    // copy command's one-line-per-blob stderr log is left out here.
    registry: compatRegistryOptions(p, { ...registryOptionsFrom(p, io), onProgress: undefined }, [...tags, ...registryOutputs.flatMap((o) => o.names ?? [])]),
    env: io.env,
  };
  Object.assign(options, image, cacheOptions(p, cwd), runOptions(p, cwd), attestOptionsFrom(p, cwd));
  const ttl = str(p, "cache-ttl");
  if (ttl !== undefined) options.cacheTtlSeconds = parseDuration(ttl, "cache-ttl");
  applyCompatFlags(p, options, warn);
  applySandboxFlags(p, options, str(p, "executor") ?? "bwrap");
  if (bool(p, "dry-run")) Object.assign(options, { dryRun: true, push: false, outputs: [] });
  const call = callFrom(p);
  const executorOptions = call === "check" ? undefined : executorOptionsFrom(p, io);
  if (executorOptions) options.executor = new (await import("../../builder/sandbox/buildkit.js")).BuildkitExecutor(executorOptions);
  return { help: false, ...(call ? { call } : {}), options, progress, quiet: bool(p, "quiet") || silent, files };
}

/** --progress: buildx's rawjson (one JSON object per line) is ocibuild's json events; quiet and none are -q. */
function progressFrom(p: ParsedFlags): { progress: BuildInvocation["progress"]; silent: boolean } {
  const progressFlag = str(p, "progress") ?? "auto";
  if (!["auto", "plain", "json", "tty", "rawjson", "quiet", "none"].includes(progressFlag)) {
    throw new OcibuildError("USAGE_BAD_VALUE", `--progress must be auto, tty, plain, json, rawjson, quiet or none, not "${progressFlag}"`);
  }
  const silent = progressFlag === "quiet" || progressFlag === "none";
  const progress = progressFlag === "rawjson" ? "json" : silent ? "auto" : progressFlag;
  return { progress: progress as BuildInvocation["progress"], silent };
}

/** --output, and kaniko's --oci-layout-path and --tar-path as outputs; a bad -t is a usage error before any work. */
function outputsFrom(p: ParsedFlags, tags: string[], cwd: string): BuildOutput[] {
  const refs = tags.map((t) => asUsage(() => parseReference(t), `-t ${t}`));
  const outputs = list(p, "output").map((o) => asUsage(() => parseOutput(o, cwd), `--output ${o}`));
  const layoutPath = str(p, "oci-layout-path");
  // kaniko leaves this layout untagged; it is named so that umoci and skopeo open it by tag.
  if (layoutPath) outputs.push({ type: "oci", dest: resolve(cwd, layoutPath), tag: refs[0]?.tag ?? "latest" });
  const tarPath = str(p, "tar-path");
  if (tarPath) outputs.push({ type: "docker-archive", dest: resolve(cwd, tarPath) });
  return outputs;
}

/** What image is made: the target stage and platforms, the layers' compression and level, and the timestamps' clamp. */
function imageOptions(p: ParsedFlags, env: Record<string, string | undefined>): Pick<BuildOptions, "compression" | "compressionLevel" | "forceCompression" | "platform" | "sourceDateEpoch" | "target"> {
  const out: Pick<BuildOptions, "compression" | "compressionLevel" | "forceCompression" | "platform" | "sourceDateEpoch" | "target"> = {};
  Object.assign(out, layerOptions({ compression: str(p, "compression"), level: str(p, "compression-level") }, list(p, "output")));
  const platformFlag = str(p, "platform");
  // Parsed here, once: the library gets platforms, not text to parse again.
  if (platformFlag !== undefined) out.platform = asUsage(() => parsePlatformList(platformFlag, hostPlatform()), `--platform ${platformFlag}`);
  const sde = env.SOURCE_DATE_EPOCH;
  if (sde !== undefined && sde !== "") {
    if (!/^\d+$/.test(sde)) throw new OcibuildError("USAGE_BAD_VALUE", `SOURCE_DATE_EPOCH must be whole seconds, not "${sde}"`);
    out.sourceDateEpoch = Number(sde);
  } else if (bool(p, "reproducible")) out.sourceDateEpoch = 0;
  const target = str(p, "target");
  if (target !== undefined) out.target = target;
  return out;
}

/** --push, --no-push and registry outputs must agree, and a push needs somewhere to go. */
function checkPushFlags(p: ParsedFlags, tags: string[], outputs: BuildOutput[]): void {
  const noPush = bool(p, "no-push");
  if (noPush && bool(p, "push")) throw new OcibuildError("USAGE_BAD_VALUE", "--push and --no-push contradict each other");
  if (bool(p, "push") && tags.length === 0) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "--push needs at least one -t/--tag");
  const registryOutputs = outputs.filter((o) => o.type === "registry");
  if (registryOutputs.some((o) => o.names === undefined) && tags.length === 0) {
    throw new OcibuildError("USAGE_MISSING_ARGUMENT", "--output type=registry needs name=REF or a -t/--tag to push to", { details: { flag: "--output" } });
  }
  if (registryOutputs.length > 0 && noPush) throw new OcibuildError("USAGE_BAD_VALUE", "--output type=registry and --no-push contradict each other");
}

/** The files the CLI writes after the build (digest, names with digest, image ID, metadata), as absolute paths. */
function resultFiles(p: ParsedFlags, tags: string[], cwd: string): BuildInvocation["files"] {
  const named: [keyof BuildInvocation["files"], string][] = [
    ["digest", "digest-file"],
    ["imageNameWithDigest", "image-name-with-digest-file"],
    ["imageNameTagWithDigest", "image-name-tag-with-digest-file"],
    ["iid", "iidfile"],
    ["metadata", "metadata-file"],
  ];
  for (const flag of ["image-name-with-digest-file", "image-name-tag-with-digest-file"]) {
    if (str(p, flag) !== undefined && tags.length === 0) throw new OcibuildError("USAGE_MISSING_ARGUMENT", `--${flag} needs at least one -t/--destination`);
  }
  const files: BuildInvocation["files"] = {};
  for (const [key, flag] of named) {
    const v = str(p, flag);
    if (v !== undefined) files[key] = resolve(cwd, v);
  }
  return files;
}

/** The cache's directory, whether to read and write it, its registry repository; the layer size bound. */
function cacheOptions(p: ParsedFlags, cwd: string): Partial<BuildOptions> {
  const out: Partial<BuildOptions> = {};
  const cacheDir = str(p, "cache-dir");
  if (cacheDir !== undefined) out.cacheDir = resolve(cwd, cacheDir);
  if (bool(p, "skip-push-permission-check")) out.skipPushPermissionCheck = true;
  const maxLayerSize = str(p, "max-layer-size");
  if (maxLayerSize !== undefined) out.maxLayerSize = parseSize(maxLayerSize, "max-layer-size");
  if (bool(p, "no-cache")) out.noCache = true;
  if (bool(p, "pull")) out.pull = true;
  if (bool(p, "no-cache-write")) out.noCacheWrite = true;
  const filter = list(p, "no-cache-filter").flatMap((v) => v.split(",").map((x) => x.trim()).filter((x) => x !== ""));
  if (filter.length > 0) out.noCacheFilter = filter;
  const cacheRepo = str(p, "cache-repo");
  if (cacheRepo !== undefined) {
    asUsage(() => parseReference(cacheRepo), `--cache-repo ${cacheRepo}`);
    out.cacheRepo = cacheRepo;
  }
  return out;
}

/** What RUN steps get: secrets, ssh agents, entitlements and the default network. */
function runOptions(p: ParsedFlags, cwd: string): Partial<BuildOptions> {
  const out: Partial<BuildOptions> = {};
  const secrets = list(p, "secret").map((v) => asUsage(() => parseSecretFlag(v), `--secret ${v.replace(/(src|source|env)=[^,]*/g, "$1=…")}`));
  if (secrets.length > 0) out.secrets = secrets.map((s) => (s.src !== undefined ? { ...s, src: resolve(cwd, s.src) } : s));
  const ssh = list(p, "ssh").map(parseSshFlag);
  if (ssh.length > 0) out.ssh = ssh.map((s) => ({ ...s, paths: s.paths.map((x) => resolve(cwd, x)) }));
  const allow = list(p, "allow");
  if (allow.length > 0) out.allow = allow;
  const net = str(p, "network");
  if (net !== undefined) out.network = net as "default" | "none" | "host";
  return out;
}
