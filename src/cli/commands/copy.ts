/**
 * `ocibuild copy SRC DST`, `ocibuild pull REF --output oci:DIR` and
 * `ocibuild push oci:DIR[:tag] REF`: thin shells over copyImage, plus the
 * registry flags shared with `inspect`.
 */
import { OcibuildError } from "../../errors.js";
import { copyImage, parseLocation, type CopyResult } from "../../oci/copy.js";
import { parsePlatform } from "../../oci/platform.js";
import type { RegistryOptions } from "../../oci/registry/types.js";
import { type FlagSpec, type ParsedFlags, bool, helpText, list, parseDuration, parseFlags, str } from "../flags.js";
import type { CliIO, Command } from "../io.js";

export const REGISTRY_FLAGS: FlagSpec[] = [
  { names: ["insecure-registry"], type: "string", repeatable: true, valueName: "HOST[:PORT]", description: "allow plain HTTP (and unverified TLS) for this registry" },
  { names: ["registry-certificate"], type: "string", repeatable: true, valueName: "HOST=PATH", description: "trust the CA certificate(s) in PATH for HOST" },
  { names: ["skip-tls-verify"], type: "boolean", description: "do not verify any registry's TLS certificate (unsafe)" },
  { names: ["skip-tls-verify-registry"], type: "string", repeatable: true, valueName: "HOST[:PORT]", description: "do not verify this registry's TLS certificate (unsafe)" },
  { names: ["registry-mirror"], type: "string", repeatable: true, valueName: "HOST", description: "try this mirror first for docker.io pulls" },
  { names: ["authfile"], type: "string", valueName: "PATH", description: "docker config.json / podman auth.json with credentials" },
  { names: ["jobs", "concurrency"], short: ["j"], type: "string", valueName: "N", description: "parallel blob transfers (default 4)" },
  { names: ["registry-timeout"], type: "string", valueName: "DURATION", description: "fail a registry request that moves less than 1 KiB for this long (default 60s; e.g. 5m)" },
  { names: ["help"], short: ["h"], type: "boolean", description: "show this help" },
];

const PLATFORM_FLAG: FlagSpec = { names: ["platform"], type: "string", valueName: "OS/ARCH[/VARIANT]", description: "pick this platform's image from an index" };

/** RegistryOptions from the shared flags and the injected environment. */
export function registryOptionsFrom(p: ParsedFlags, io: CliIO): RegistryOptions {
  const certs: Record<string, string> = {};
  for (const v of list(p, "registry-certificate")) {
    const eq = v.indexOf("=");
    if (eq <= 0 || eq === v.length - 1) {
      throw new OcibuildError("USAGE_BAD_VALUE", `--registry-certificate takes HOST=PATH, not "${v}"`);
    }
    certs[v.slice(0, eq)] = v.slice(eq + 1);
  }
  const short = (d: string) => d.slice(0, 19);
  const opts: RegistryOptions = {
    // One plain line per blob outcome and per retry: what was reused, what moved, what failed.
    onProgress: (ev) => {
      if (ev.kind === "exists") io.stderr.write(`${short(ev.digest)} already there\n`);
      else if (ev.kind === "mount") io.stderr.write(`${short(ev.digest)} mounted\n`);
      else if (ev.total !== undefined && ev.bytes === ev.total) io.stderr.write(`${short(ev.digest)} ${ev.kind === "push" ? "pushed" : "pulled"} (${ev.bytes} bytes)\n`);
    },
    onRetry: (ev) => io.stderr.write(`retrying ${ev.what} in ${(ev.delayMs / 1000).toFixed(1)}s (${ev.reason})\n`),
    insecureRegistries: list(p, "insecure-registry"),
    registryCertificates: certs,
    skipTlsVerify: bool(p, "skip-tls-verify"),
    skipTlsVerifyRegistries: list(p, "skip-tls-verify-registry"),
    registryMirrors: list(p, "registry-mirror"),
    env: io.env,
  };
  const authfile = str(p, "authfile");
  if (authfile !== undefined) opts.authConfigPath = authfile;
  const jobs = str(p, "jobs");
  if (jobs !== undefined) {
    if (!/^[1-9][0-9]*$/.test(jobs)) throw new OcibuildError("USAGE_BAD_VALUE", `--jobs takes a positive number, not "${jobs}"`);
    opts.concurrency = Number(jobs);
  }
  const timeout = str(p, "registry-timeout");
  if (timeout !== undefined) {
    const seconds = parseDuration(timeout, "registry-timeout");
    if (seconds < 1) throw new OcibuildError("USAGE_BAD_VALUE", `--registry-timeout must be at least 1s, not "${timeout}"`);
    opts.timeoutSeconds = seconds;
  }
  return opts;
}

export function platformFrom(p: ParsedFlags) {
  const v = str(p, "platform");
  if (v === undefined) return undefined;
  try {
    return parsePlatform(v);
  } catch (e) {
    throw new OcibuildError("USAGE_BAD_VALUE", (e as Error).message);
  }
}

function summary(io: CliIO, verb: string, src: string, dst: string, r: CopyResult): void {
  io.stderr.write(
    `${verb} ${src} -> ${dst}: ${r.manifests} manifest${r.manifests === 1 ? "" : "s"}; blobs: ${r.blobs.uploaded} copied, ${r.blobs.mounted} mounted, ${r.blobs.exists} already there\n`,
  );
  io.stdout.write(`${r.digest}\n`);
}

const COPY_SPECS: FlagSpec[] = [
  PLATFORM_FLAG,
  { names: ["all"], short: ["a"], type: "boolean", description: "copy every image of an index (the default)" },
  ...REGISTRY_FLAGS,
];

const COPY_USAGE = `Usage: ocibuild copy [flags] SRC DST

Copies an image, or a whole index with all its platforms, between registries and
OCI layouts (oci:DIR[:TAG]) byte for byte: digests are preserved. Blobs already at
the destination are skipped and blobs in another repository of the same registry
are mounted instead of uploaded. Prints the digest of what was copied.`;

export const copyCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, COPY_SPECS);
  if (bool(p, "help")) {
    io.stdout.write(
      helpText(COPY_USAGE, COPY_SPECS, [
        "ocibuild copy registry.example.com/app:v1 registry.example.com/app:stable",
        "ocibuild copy --platform linux/arm64 docker.io/library/busybox:1 localhost:5000/busybox:1",
        "ocibuild copy localhost:5000/app:v1 oci:./app-layout:v1",
      ]),
    );
    return 0;
  }
  if (p.positionals.length !== 2) {
    throw new OcibuildError("USAGE_MISSING_ARGUMENT", `copy takes SRC and DST, got ${p.positionals.length} argument${p.positionals.length === 1 ? "" : "s"}`, {
      hint: "ocibuild copy SRC DST (run ocibuild copy --help)",
    });
  }
  const [src, dst] = p.positionals as [string, string];
  const platform = platformFrom(p);
  if (platform && bool(p, "all")) throw new OcibuildError("USAGE_BAD_VALUE", "--all and --platform cannot be used together");
  const r = await copyImage(src, dst, { platform, all: bool(p, "all"), registry: registryOptionsFrom(p, io), signal });
  summary(io, "copied", src, dst, r);
  return 0;
};

const PULL_SPECS: FlagSpec[] = [
  { names: ["output"], short: ["o"], type: "string", valueName: "oci:DIR[:TAG]", description: "where to write the image (an OCI layout)" },
  PLATFORM_FLAG,
  { names: ["all"], short: ["a"], type: "boolean", description: "pull every image of an index (the default)" },
  ...REGISTRY_FLAGS,
];

export const pullCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, PULL_SPECS);
  if (bool(p, "help")) {
    io.stdout.write(
      helpText("Usage: ocibuild pull [flags] REF --output oci:DIR[:TAG]\n\nPulls an image (or index) into an OCI layout. Without a TAG in --output the source tag names it.", PULL_SPECS, [
        "ocibuild pull localhost:5000/app:v1 --output oci:./layout",
        "ocibuild pull --platform linux/amd64 ghcr.io/org/tool:1.2 -o oci:/tmp/tool:1.2",
      ]),
    );
    return 0;
  }
  if (p.positionals.length !== 1) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "pull takes one image reference", { hint: "ocibuild pull REF --output oci:DIR" });
  const out = str(p, "output");
  if (out === undefined) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "pull needs --output oci:DIR[:TAG]");
  if (!out.startsWith("oci:")) throw new OcibuildError("USAGE_BAD_VALUE", `--output must be an OCI layout (oci:DIR[:TAG]), not "${out}"`);
  const src = p.positionals[0]!;
  const loc = parseLocation(src);
  if (loc.kind !== "registry") throw new OcibuildError("USAGE_BAD_VALUE", `pull reads from a registry; use copy for "${src}"`);
  const platform = platformFrom(p);
  if (platform && bool(p, "all")) throw new OcibuildError("USAGE_BAD_VALUE", "--all and --platform cannot be used together");
  const r = await copyImage(src, out, { platform, registry: registryOptionsFrom(p, io), signal, defaultLayoutRef: loc.ref.tag });
  summary(io, "pulled", src, out, r);
  return 0;
};

const PUSH_SPECS: FlagSpec[] = [...REGISTRY_FLAGS];

export const pushCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, PUSH_SPECS);
  if (bool(p, "help")) {
    io.stdout.write(
      helpText("Usage: ocibuild push [flags] oci:DIR[:TAG] REF\n\nPushes an image (or index) from an OCI layout to a registry, digests preserved.", PUSH_SPECS, [
        "ocibuild push oci:./layout:v1 localhost:5000/app:v1",
        "ocibuild push --insecure-registry registry.lan:5000 oci:./out registry.lan:5000/team/app:latest",
      ]),
    );
    return 0;
  }
  if (p.positionals.length !== 2) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "push takes oci:DIR[:TAG] and REF", { hint: "ocibuild push oci:DIR[:TAG] REF" });
  const [src, dst] = p.positionals as [string, string];
  if (!src.startsWith("oci:")) throw new OcibuildError("USAGE_BAD_VALUE", `push reads from an OCI layout (oci:DIR[:TAG]), not "${src}"`, { hint: "use ocibuild copy between registries" });
  if (parseLocation(dst).kind !== "registry") throw new OcibuildError("USAGE_BAD_VALUE", `push writes to a registry; use copy for "${dst}"`);
  const r = await copyImage(src, dst, { registry: registryOptionsFrom(p, io), signal });
  summary(io, "pushed", src, dst, r);
  return 0;
};
