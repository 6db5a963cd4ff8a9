/**
 * The remote BuildKit executor: each RUN runs on a buildkitd (its OCI/runc or
 * containerd worker) instead of in a local bubblewrap sandbox.
 *
 * One RUN: the step's input image (base plus the layers so far) is pushed by
 * digest to the staging repository; an LLB definition (that image as a source,
 * an exec op with the command, env, cwd, user and network) is solved with the
 * daemon's image exporter pushing the result by digest to the same repository;
 * the result's layers must start with ours, and its one extra layer is pulled
 * into our content store, its digest and DiffID checked. The daemon's Status
 * stream carries the command's output into our progress events. Everything else
 * (Dockerfile, COPY/ADD, cache keys, image assembly, push) stays in ocibuild, so
 * a cache hit never contacts the daemon: nothing here runs until a RUN misses.
 */
import { randomBytes } from "node:crypto";
import { OcibuildError } from "../../errors.js";
import type { Platform } from "../../oci/manifest.js";
import { parseReference, parseReferenceNoDefault, withDigest, type ImageReference } from "../../oci/reference.js";
import { formatPlatform, platformMatches } from "../../oci/platform.js";
import { assembleImage } from "../image.js";
import { pushImage } from "../output.js";
import type { BuildkitClient, BuildkitConnectOptions } from "./buildkit/client.js";
import { importLayer } from "./buildkit/layer.js";
import { CredentialStore, type CredentialStoreOptions } from "../../oci/auth/index.js";
import { execDefinition } from "./buildkit/llb.js";
import { llbMounts, runNonce, type BuildkitRunExtras } from "./buildkit/mounts.js";
import type { BuildkitVersion, StatusResponse, WorkerRecord } from "./buildkit/messages.js";
import { DEFAULT_PATH, OutputTail, type Availability, type Executor, type RemoteRunResult, type RemoteRunSpec, type RunResult, type RunSpec } from "./index.js";

export interface BuildkitExecutorOptions extends BuildkitConnectOptions {
  /**
   * Repository (registry/repo, no tag) that both ocibuild and the daemon can reach:
   * step inputs are pushed there and the daemon pushes results there, by digest.
   * The daemon needs pull and push access (its own registry config and credentials).
   */
  stagingRepo: string;
  /**
   * Where the daemon's registry credentials come from (docker config.json, credential
   * helpers), served to it over the session. Default: none (anonymous registry access).
   */
  credentials?: CredentialStoreOptions;
}

/** Oldest daemon we talk to: Info, push-by-digest and the Status log stream as used here. */
export const MIN_BUILDKIT_VERSION = [0, 11, 0] as const;

/** "v0.11.6" -> [0, 11, 6]; undefined for development builds ("0.0.0+unknown") or unparsable text. */
export function parseBuildkitVersion(v: string): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v);
  if (!m) return undefined;
  const out: [number, number, number] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return out.every((n) => n === 0) ? undefined : out;
}

function olderThan(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  return false;
}

/** "process ... did not complete successfully: exit code: 3" -> 3. */
export function exitCodeOf(message: string): number | undefined {
  const m = /did not complete successfully: exit code: (\d+)/.exec(message);
  return m ? Number(m[1]) : undefined;
}

export { llbMounts, type BuildkitRunExtras, type RemoteMount } from "./buildkit/mounts.js";

export interface DaemonInfo {
  address: string;
  version?: BuildkitVersion;
  workers: WorkerRecord[];
}

export class BuildkitExecutor implements Executor {
  readonly name = "buildkit";
  private clientP?: Promise<BuildkitClient>;
  private infoP?: Promise<DaemonInfo>;
  private readonly staging: ImageReference;

  constructor(private readonly opts: BuildkitExecutorOptions) {
    let ref: ImageReference;
    try {
      ref = parseReferenceNoDefault(opts.stagingRepo);
    } catch (e) {
      throw new OcibuildError("BUILDKIT_STAGING_REPO_INVALID", `--buildkit-staging-repo "${opts.stagingRepo}" is not a repository: ${(e as Error).message}`, { cause: e });
    }
    if (ref.tag !== undefined || ref.digest !== undefined) {
      throw new OcibuildError("BUILDKIT_STAGING_REPO_INVALID", `--buildkit-staging-repo "${opts.stagingRepo}" must name a repository without a tag or digest`);
    }
    this.staging = parseReference(ref.name);
  }

  /** RPCs made so far (0 until a RUN misses the cache or info() is asked for). */
  get calls(): number {
    return this.clientSync?.calls ?? 0;
  }
  private clientSync?: BuildkitClient;

  private client(): Promise<BuildkitClient> {
    // The gRPC client (and @grpc/grpc-js) is loaded on first use: importing the library,
    // or building with the local executor, never loads it.
    this.clientP ??= import("./buildkit/client.js").then(({ BuildkitClient }) => BuildkitClient.connect(this.opts)).then((c) => (this.clientSync = c));
    return this.clientP;
  }

  /** Version and workers (platforms) of the daemon; asked once per executor. */
  info(signal?: AbortSignal): Promise<DaemonInfo> {
    this.infoP ??= (async () => {
      const c = await this.client();
      const workers = await c.listWorkers(signal);
      let version: BuildkitVersion | undefined;
      try {
        version = await c.info(signal);
      } catch (e) {
        if ((e as OcibuildError).code !== "BUILDKIT_VERSION_TOO_OLD") throw e;
        version = workers.find((w) => w.version)?.version;
      }
      const parsed = version ? parseBuildkitVersion(version.version) : undefined;
      if (parsed && olderThan(parsed, MIN_BUILDKIT_VERSION)) {
        throw new OcibuildError("BUILDKIT_VERSION_TOO_OLD", `the BuildKit daemon at ${c.address} is ${version!.version}; ocibuild needs v${MIN_BUILDKIT_VERSION.join(".")} or newer`);
      }
      if (workers.length === 0) throw new OcibuildError("BUILDKIT_NO_WORKERS", `the BuildKit daemon at ${c.address} has no workers`);
      return { address: c.address, version, workers };
    })();
    // A failed probe is not remembered: the next step may find the daemon up.
    this.infoP.catch(() => (this.infoP = undefined));
    return this.infoP;
  }

  async available(): Promise<Availability> {
    try {
      await this.info();
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
  }

  run(_spec: RunSpec): Promise<RunResult> {
    return Promise.reject(new OcibuildError("BUILDKIT_LOCAL_ROOT", "the BuildKit executor runs steps on the daemon (runRemote), not in a local root"));
  }

  private async checkPlatform(platform: Platform, signal?: AbortSignal): Promise<void> {
    const { workers, address } = await this.info(signal);
    const all = workers.flatMap((w) => w.platforms);
    if (all.some((p) => platformMatches(platform, p))) return;
    throw new OcibuildError("BUILDKIT_PLATFORM_UNSUPPORTED", `the BuildKit daemon at ${address} cannot run ${formatPlatform(platform)} steps`, {
      hint: `its workers run: ${[...new Set(all.map(formatPlatform))].join(", ") || "nothing"}`,
      details: { platforms: all.map(formatPlatform) },
    });
  }

  async runRemote(spec: Omit<RemoteRunSpec, "mounts"> & BuildkitRunExtras): Promise<RemoteRunResult> {
    const { state, signal } = spec;
    const secrets = spec.secrets ?? new Map<string, Buffer>();
    const extra = llbMounts(spec.mounts ?? [], secrets);
    await this.checkPlatform(state.platform, signal);
    const client = await this.client();
    const src = { content: spec.content, registry: spec.registry, signal };

    // 1. The input image, by digest (nothing to stage for scratch).
    let image: string | undefined;
    if (state.layers.length > 0) {
      const input = assembleImage(state, { sourceDateEpoch: 0 });
      const ref = withDigest(this.staging, input.manifest.digest);
      spec.onLog?.(`buildkit: staging the step's input (${state.layers.length} layers) as ${ref}`);
      await pushImage(input, [ref], src, {});
      image = `docker-image://${ref.name}@${input.manifest.digest}`;
    }

    // 2. The step as LLB: PATH as Docker adds it; HOME, groups from the user are the daemon's (runc) job.
    // Our cache decided that this step runs, so the daemon must not answer it from its
    // own cache: the exec is marked ignore_cache. The daemon however gives an op that
    // ignores its cache fresh cache mounts, so a step with a cache mount is made unique
    // instead, by an optional secret mount no one provides (skipped, invisible to the
    // command, but part of the daemon's cache key).
    const hasCacheMount = extra.mounts.some((m) => m.type === "cache");
    const env = spec.env.some((e) => e.startsWith("PATH=")) ? [...spec.env] : [...spec.env, `PATH=${DEFAULT_PATH}`];
    const def = execDefinition({
      image,
      platform: state.platform,
      args: spec.args,
      env,
      cwd: spec.cwd,
      user: spec.user,
      network: spec.network === "default" ? "sandbox" : spec.network,
      description: spec.description,
      mounts: hasCacheMount ? [...extra.mounts, runNonce()] : extra.mounts,
      secretEnv: extra.secretEnv,
      ignoreCache: !hasCacheMount,
    });

    // 3. Solve, following the Status stream for the command's output.
    const ref = `ocibuild-${randomBytes(12).toString("hex")}`;
    const tail = new OutputTail();
    const seen = new Set<string>();
    const onStatus = (s: StatusResponse) => {
      // The daemon's own steps (pulling the input, exporting the result) as log lines, once each.
      for (const v of s.vertexes) {
        if (v.digest === def.execDigest || !v.name) continue;
        if (v.started && !seen.has(v.digest)) {
          seen.add(v.digest);
          spec.onLog?.(`buildkit: ${v.name}${v.cached ? " (cached)" : ""}`);
        }
        if (v.error && !seen.has(`${v.digest} error`)) {
          seen.add(`${v.digest} error`);
          spec.onLog?.(`buildkit: ${v.name}: ${v.error}`);
        }
      }
      for (const l of s.logs) {
        if (l.msg.length === 0) continue;
        tail.push(l.msg);
        spec.onOutput?.(l.stream === 2 ? "stderr" : "stdout", l.msg);
      }
      for (const w of s.warnings) spec.onLog?.(`buildkit warning: ${w.short}`);
    };
    const { openSession } = await import("./buildkit/session.js");
    const session = openSession(client, { credentials: (host, sig) => this.credentialsFor(host, sig), secrets, signal });
    const statusAbort = new AbortController();
    const stopStatus = () => statusAbort.abort();
    signal?.addEventListener("abort", stopStatus, { once: true });
    const status = client.status(ref, onStatus, statusAbort.signal).catch(() => {});
    let exporterResponse: Record<string, string>;
    try {
      const res = await client.solve(
        {
          ref,
          session: session.id,
          definition: def.bytes,
          // A host-network step (allowed by our network.host entitlement) asks the daemon for its own.
          entitlements: spec.network === "host" ? ["network.host"] : undefined,
          exporter: "image",
          exporterAttrs: {
            name: this.staging.name,
            push: "true",
            "push-by-digest": "true",
            "oci-mediatypes": "true",
            compression: "gzip",
          },
        },
        signal,
      );
      exporterResponse = res.exporterResponse;
    } catch (e) {
      const err = e as OcibuildError;
      const code = err.code === "BUILDKIT_ERROR" ? exitCodeOf(err.message) : undefined;
      if (code !== undefined) {
        await settle(status, statusAbort);
        return { exitCode: code, tail: tail.toString() };
      }
      statusAbort.abort();
      if (err.code === "BUILDKIT_ERROR") {
        throw new OcibuildError("BUILDKIT_SOLVE_FAILED", err.message, { cause: e, details: err.details, hint: "the daemon could not run the step; its log may say more" });
      }
      throw e;
    } finally {
      signal?.removeEventListener("abort", stopStatus);
      session.close();
    }
    await settle(status, statusAbort);

    // 4. The result: our layers, then (at most) one more.
    const digest = exporterResponse["containerimage.digest"];
    if (!digest) {
      throw new OcibuildError("BUILDKIT_PROTOCOL", "the BuildKit daemon's image export returned no containerimage.digest", { details: { exporterResponse } });
    }
    const outRef = withDigest(this.staging, digest as never);
    const out = await spec.registry.getImage(outRef, { platform: state.platform, signal });
    const outLayers = out.manifest.parsed.layers;
    const outDiffs = out.config.parsed.rootfs.diff_ids;
    const ours = state.layers.map((l) => l.diffId as string);
    const prefixOk = outDiffs.length >= ours.length && ours.every((d, i) => outDiffs[i] === d);
    if (!prefixOk || outLayers.length !== outDiffs.length || outLayers.length > ours.length + 1) {
      throw new OcibuildError("BUILDKIT_RESULT_MISMATCH", `the BuildKit daemon's result ${outRef} does not extend the step's input by one layer`, {
        details: { input: ours, output: outDiffs },
      });
    }
    if (outLayers.length === ours.length) return { exitCode: 0, tail: tail.toString() };
    const layer = await importLayer(spec.registry, spec.content, this.staging, outLayers[ours.length]!, outDiffs[ours.length]!, {
      compression: spec.compression,
      compressionLevel: spec.compressionLevel,
      sourceDateEpoch: spec.sourceDateEpoch,
      signal,
    });
    return layer ? { exitCode: 0, tail: tail.toString(), layer } : { exitCode: 0, tail: tail.toString() };
  }

  private creds?: CredentialStore;
  private async credentialsFor(host: string, signal?: AbortSignal): Promise<{ username: string; secret: string } | undefined> {
    if (!this.opts.credentials) return undefined;
    this.creds ??= new CredentialStore(this.opts.credentials);
    const c = await this.creds.get(host, signal);
    if (c?.identityToken) return { username: "", secret: c.identityToken };
    if (c?.username !== undefined && c.password !== undefined) return { username: c.username, secret: c.password };
    return undefined;
  }

  /** Close the connection (pending calls fail). */
  close(): void {
    this.clientSync?.close();
  }
}

/**
 * The Status stream ends by itself shortly after the job; give it a moment to
 * deliver the last logs, then stop following it.
 */
async function settle(status: Promise<void>, ctl: AbortController): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([status, new Promise<void>((r) => (timer = setTimeout(r, 2000)))]);
  clearTimeout(timer);
  ctl.abort();
}
