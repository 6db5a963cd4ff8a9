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
import { OcibuildError, optionWords } from "../../errors.js";
import type { Platform } from "../../oci/manifest.js";
import { parseReference, parseReferenceNoDefault, withDigest, type ImageReference } from "../../oci/reference.js";
import { formatPlatform, platformMatches } from "../../oci/platform.js";
import { assembleImage } from "../image.js";
import { pushArtifact } from "../../oci/registry/push.js";
import { stageImage } from "../stage-image.js";
import type { BuildkitClient, BuildkitConnectOptions } from "./buildkit/client.js";
import { importLayer } from "./buildkit/layer.js";
import { CredentialStore, type CredentialStoreOptions } from "../../oci/auth/index.js";
import type { LlbDefinition } from "./buildkit/llb.js";
import { llbMounts } from "./buildkit/mounts.js";
import type { BuildkitVersion, WorkerRecord } from "./buildkit/messages.js";
import { newLayerIndex, StatusFollower, stepDefinition, unsupported, type BuildkitStepSpec } from "./buildkit/step.js";
import { layersWritten, type LayerRecord } from "../stage-state.js";
import type { Availability, Executor, RunStepResult } from "./index.js";

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

export { llbMounts, type RemoteMount } from "./buildkit/mounts.js";
export type { BuildkitStepContext, BuildkitStepSpec } from "./buildkit/step.js";

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
      throw new OcibuildError("BUILDKIT_STAGING_REPO_INVALID", `${optionWords("stagingRepo", opts.stagingRepo)} is not a repository: ${(e as Error).message}`, { cause: e });
    }
    if (ref.tag !== undefined || ref.digest !== undefined) {
      throw new OcibuildError("BUILDKIT_STAGING_REPO_INVALID", `${optionWords("stagingRepo", opts.stagingRepo)} must name a repository without a tag or digest`);
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

  /**
   * One RUN step on the daemon: the step's input image staged by digest, the step
   * solved as LLB with the image exporter pushing the result by digest, and the one
   * layer the command added pulled into the build's content store.
   */
  async run(spec: BuildkitStepSpec): Promise<RunStepResult> {
    const locate = spec.locate ?? ((e: OcibuildError) => e);
    const refused = unsupported(spec, this.name);
    if (refused) throw locate(refused);
    let extra: ReturnType<typeof llbMounts>;
    try {
      extra = llbMounts(spec.mounts ?? [], spec.ctx.secrets);
    } catch (e) {
      // A mount or secret the step names is about its line.
      throw e instanceof OcibuildError ? locate(e) : e;
    }
    await this.checkPlatform(spec.state.platform, spec.ctx.signal);
    const client = await this.client();
    const def = stepDefinition(spec, await this.stageInput(spec), extra);
    const follower = new StatusFollower(def.execDigest, spec.onOutput, (message) => spec.ctx.emit({ type: "log", level: "info", message }));
    const solved = await this.solve(client, spec, def, follower);
    const tail = follower.tail.toString();
    if (solved.exitCode !== undefined) return { exitCode: solved.exitCode, tail };
    const layer = await this.resultLayer(spec, solved.digest);
    return layer ? { exitCode: 0, tail, layer } : { exitCode: 0, tail };
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

  /** The step's input image (base plus the layers so far) pushed by digest to the staging repository; undefined for scratch. */
  private async stageInput(spec: BuildkitStepSpec): Promise<string | undefined> {
    const { state, ctx } = spec;
    if (state.layers.length === 0) return undefined;
    // The previous step's layer may still be being compressed: its blob is what the daemon pulls.
    await layersWritten(state.layers);
    const input = assembleImage(state, { sourceDateEpoch: 0 });
    const ref = withDigest(this.staging, input.manifest.digest);
    ctx.emit({ type: "log", level: "info", message: `buildkit: staging the step's input (${state.layers.length} layers) as ${ref}` });
    await pushArtifact(ctx.registry, stageImage(input, { content: ctx.content, registry: ctx.registry }), [ref], { signal: ctx.signal });
    return `docker-image://${ref.name}@${input.manifest.digest}`;
  }

  /**
   * Solve the step with the image exporter (push by digest to the staging repository),
   * following the Status stream and serving credentials and secrets over a session.
   * A command that failed is its exit code; the daemon's own failures are errors.
   */
  private async solve(client: BuildkitClient, spec: BuildkitStepSpec, def: LlbDefinition, follower: StatusFollower): Promise<{ exitCode: number } | { exitCode?: undefined; digest: string }> {
    const { signal } = spec.ctx;
    const ref = `ocibuild-${randomBytes(12).toString("hex")}`;
    const { openSession } = await import("./buildkit/session.js");
    const session = openSession(client, { credentials: (host, sig) => this.credentialsFor(host, sig), secrets: spec.ctx.secrets, signal });
    const statusAbort = new AbortController();
    const stopStatus = () => statusAbort.abort();
    signal?.addEventListener("abort", stopStatus, { once: true });
    const status = client.status(ref, (s) => follower.onStatus(s), statusAbort.signal).catch(() => {});
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
          exporterAttrs: { name: this.staging.name, push: "true", "push-by-digest": "true", "oci-mediatypes": "true", compression: "gzip" },
        },
        signal,
      );
      exporterResponse = res.exporterResponse;
    } catch (e) {
      const exitCode = (e as OcibuildError).code === "BUILDKIT_ERROR" ? exitCodeOf((e as Error).message) : undefined;
      if (exitCode !== undefined) {
        await settle(status, statusAbort);
        return { exitCode };
      }
      statusAbort.abort();
      throw solveError(e);
    } finally {
      signal?.removeEventListener("abort", stopStatus);
      session.close();
    }
    await settle(status, statusAbort);
    const digest = exporterResponse["containerimage.digest"];
    if (!digest) throw new OcibuildError("BUILDKIT_PROTOCOL", "the BuildKit daemon's image export returned no containerimage.digest", { details: { exporterResponse } });
    return { digest };
  }

  /** The daemon's result (our layers, then at most one more): that one layer, checked, in the build's content store. */
  private async resultLayer(spec: BuildkitStepSpec, digest: string): Promise<LayerRecord | undefined> {
    const { state, ctx } = spec;
    const outRef = withDigest(this.staging, digest as never);
    const out = await ctx.registry.getImage(outRef, { platform: state.platform, signal: ctx.signal });
    const layers = out.manifest.parsed.layers;
    const diffIds = out.config.parsed.rootfs.diff_ids;
    const i = newLayerIndex(state.layers.map((l) => l.diffId as string), { ref: String(outRef), layers: layers.length, diffIds });
    if (i === undefined) return undefined;
    return importLayer(ctx.registry, ctx.content, this.staging, layers[i]!, diffIds[i]!, {
      compression: ctx.compression,
      compressionLevel: ctx.compressionLevel,
      sourceDateEpoch: ctx.sourceDateEpoch,
      signal: ctx.signal,
    });
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

/** The daemon could not run the step (as opposed to the command failing in it). */
function solveError(e: unknown): unknown {
  const err = e as OcibuildError;
  if (err.code !== "BUILDKIT_ERROR") return e;
  return new OcibuildError("BUILDKIT_SOLVE_FAILED", err.message, { cause: e, details: err.details, hint: "the daemon could not run the step; its log may say more" });
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
