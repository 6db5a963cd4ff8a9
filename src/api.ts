/**
 * The library's operations (`build`, `buildEvents`, `run`, `copy`, `inspect`), kept apart
 * from the package index so the CLI can use them without loading everything the
 * index re-exports (the BuildKit client and gRPC among them).
 */
import { build as runBuilder, type BuildOptions as BuilderOptions, type BuildResult } from "./builder/build.js";
import { eventQueue, type BuildEvent, type EventSink } from "./builder/events.js";
import { OcibuildError, isOcibuildError } from "./errors.js";
import { copyImage, inspect as inspectImage, type CopyOptions, type CopyResult, type InspectOptions, type InspectResult } from "./oci/copy.js";
import type { ProgressEvent, RegistryOptions } from "./oci/registry/index.js";
import { runImage, type RunOptions, type RunOutcome } from "./run/run.js";
import type { VerifyResult } from "./sign/verify.js";

/**
 * Options of {@link build}: the builder's options (context, dockerfile, tags,
 * buildArgs, target, platform, labels, push, registry, cacheDir,
 * sourceDateEpoch, signal, onEvent, ...) with every output kind the CLI's
 * `--output` knows (`oci`, `oci-archive`, `docker-archive`, `registry`).
 */
export type BuildOptions = BuilderOptions;

/** A cancelled build rejects with OcibuildError("ABORTED"), whatever the step that noticed it threw. */
function asAbort(e: unknown, signal: AbortSignal | undefined): unknown {
  if (!signal?.aborted || (isOcibuildError(e) && e.code === "ABORTED")) return e;
  return new OcibuildError("ABORTED", "the build was cancelled", { cause: signal.reason ?? e });
}

/** Progress events from the registry client, thinned to about 20 per blob (plus start and end). */
function progressSink(emit: EventSink): (ev: ProgressEvent) => void {
  const last = new Map<string, number>();
  return (ev) => {
    const key = `${ev.kind}:${ev.digest}`;
    const prev = last.get(key);
    const step = Math.max(1 << 20, Math.floor((ev.total ?? 0) / 20));
    const final = ev.total !== undefined && ev.bytes >= ev.total;
    if (prev !== undefined && !final && ev.bytes - prev < step) return;
    if (prev !== undefined && final && prev >= ev.bytes) return;
    last.set(key, ev.bytes);
    emit({ type: "progress", action: ev.kind, digest: ev.digest, bytes: ev.bytes, ...(ev.total !== undefined ? { total: ev.total } : {}) });
  };
}

/**
 * Builds an image from a Dockerfile and a context, pushes it to `tags` (unless
 * `push: false`) and writes `outputs`. Resolves to the build's result (digest,
 * descriptor, references, size, per-step report), the same structure
 * `--metadata-file` is made from. Rejects with an {@link OcibuildError} on
 * failure; `signal` cancels (nothing half-written is left behind).
 *
 * @example
 * const r = await build({ context: ".", tags: ["127.0.0.1:5000/app:dev"], onEvent: (e) => console.log(e.type) });
 */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  const emit: EventSink = opts.onEvent ?? (() => {});
  const registry: RegistryOptions = { ...opts.registry };
  const userProgress = opts.registry?.onProgress;
  const sink = progressSink(emit);
  registry.onProgress = (ev) => {
    userProgress?.(ev);
    sink(ev);
  };
  try {
    return await runBuilder({ ...opts, registry, onEvent: emit });
  } catch (e) {
    throw asAbort(e, opts.signal);
  }
}

/** A build whose events are an async iterator; see {@link buildEvents}. */
export interface BuildWithEvents {
  /** Every event of the build, in order, ending after `result` (or after an `error` event on failure). */
  events: AsyncIterable<BuildEvent>;
  /** The build's result; rejects with the build's error. */
  result: Promise<BuildResult>;
}

/**
 * Starts a build and returns its events as an async iterator next to its result.
 * The events are the objects `--progress=json` prints; on failure the last one
 * is `{ type: "error", code, message }` and `result` rejects.
 *
 * @example
 * const { events, result } = buildEvents({ context: ".", push: false });
 * for await (const e of events) if (e.type === "step-end") console.log(e.instruction, e.cached);
 * console.log((await result).digest);
 */
export function buildEvents(opts: BuildOptions): BuildWithEvents {
  const q = eventQueue<BuildEvent>();
  const user = opts.onEvent;
  const result = build({
    ...opts,
    onEvent: (e) => {
      user?.(e);
      q.push(e);
    },
  }).then(
    (r) => {
      q.end();
      return r;
    },
    (err: unknown) => {
      q.push({ type: "error", code: isOcibuildError(err) ? err.code : "INTERNAL", message: err instanceof Error ? err.message : String(err) });
      q.end();
      throw err;
    },
  );
  // The caller may only iterate events; the rejection is still reported through `result`.
  result.catch(() => {});
  return { events: q.iterable, result };
}

/**
 * Copies an image, or a whole index with all its platforms, from `src` to `dst`
 * byte for byte (digests preserved). Each is a registry reference or
 * `oci:DIR[:TAG]`. Blobs already at the destination are skipped; blobs in
 * another repository of the same registry are mounted.
 *
 * @example
 * const r = await copy("127.0.0.1:5000/app:v1", "oci:./app-layout:v1");
 * console.log(r.digest, r.blobs);
 */
export function copy(src: string, dst: string, opts: CopyOptions = {}): Promise<CopyResult> {
  return copyImage(src, dst, opts);
}

/**
 * The manifest or index `ref` names (a registry reference or `oci:DIR[:TAG]`),
 * with its digest, media type and exact bytes; with `platform`, that platform's
 * image from an index; with `config: true`, the image config.
 *
 * @example
 * const m = await inspect("127.0.0.1:5000/app:v1");
 * console.log(m.kind, m.digest);
 */
export function inspect(ref: string, opts: InspectOptions = {}): Promise<InspectResult> {
  return inspectImage(ref, opts);
}


export type { RunOptions, RunOutcome };

/**
 * Runs an image's ENTRYPOINT and CMD (as `ocibuild run` and `docker run --rm`) in
 * the RUN sandbox and resolves to the command's exit status (`exitCode`) once it
 * ended and its root is unmounted and thrown away. Its output goes to `onOutput`
 * (stdout and stderr apart), its stdin comes from `stdin`; `onEvent` gets the
 * build's event types (`log`, `progress` of pulls, `output`, `error`). `signal`
 * stops the command (the abort reason's `signal` field, else SIGTERM; SIGKILL
 * after `stopTimeoutSeconds`). Rejects with an {@link OcibuildError} when it
 * cannot start (image not found, no command, sandbox unavailable).
 *
 * @example
 * const r = await run({ image: "127.0.0.1:5000/app:v1", command: ["app", "--version"], onOutput: (s, c) => process.stdout.write(c) });
 * process.exitCode = r.exitCode;
 */
export async function run(opts: RunOptions): Promise<RunOutcome> {
  const emit: EventSink = opts.onEvent ?? (() => {});
  const sink = progressSink(emit);
  const userProgress = opts.registry?.onProgress;
  const registry: RegistryOptions = {
    ...opts.registry,
    onProgress: (ev) => {
      userProgress?.(ev);
      sink(ev);
    },
  };
  return runImage({ ...opts, registry, onEvent: emit });
}

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** Path of the public key (PEM, ECDSA P-256, as `cosign public-key` prints it). */
  key: string;
  registry?: RegistryOptions;
  signal?: AbortSignal;
}

export type { VerifyResult };

/**
 * Verifies the cosign signatures attached to `ref` with a public key: one must
 * verify and name `ref`'s digest (for an index, the index's and each platform
 * manifest's). Resolves to what was verified, with the attestation statements
 * (provenance, SBOM) found for each manifest; rejects with VERIFY_NO_SIGNATURE,
 * VERIFY_SIGNATURE_INVALID or VERIFY_DIGEST_MISMATCH.
 */
export async function verify(ref: string, opts: VerifyOptions): Promise<VerifyResult> {
  const [{ readFile }, { loadPublicKey }, { verifyImage }, { RegistryClient }, { parseReference }] = await Promise.all([
    import("node:fs/promises"),
    import("./sign/keys.js"),
    import("./sign/verify.js"),
    import("./oci/registry/index.js"),
    import("./oci/reference.js"),
  ]);
  const pem = await readFile(opts.key, "utf8").catch((e: NodeJS.ErrnoException) => {
    throw new OcibuildError("VERIFY_KEY_INVALID", `public key ${opts.key} cannot be read (${e.code ?? e.message})`, { file: opts.key, cause: e });
  });
  const key = loadPublicKey(pem, opts.key);
  const client = new RegistryClient(opts.registry ?? {});
  try {
    return await verifyImage(client, parseReference(ref), key, opts.signal);
  } finally {
    await client.close();
  }
}
