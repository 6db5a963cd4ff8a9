/**
 * Blob uploads: cross-repository mount, monolithic POST+PUT for small blobs,
 * chunked PATCH uploads with Content-Range for large ones (honouring the
 * registry's minimum chunk size), resuming an interrupted chunked upload from
 * the offset the registry reports. The source is verified against its digest
 * while it is sent: a blob that does not match is never committed.
 */
import { Readable, Transform } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { type Digest, VerifyingStream } from "../digest.js";
import type { Descriptor } from "../manifest.js";
import type { HttpRequest, HttpResponse, Transport } from "./transport.js";
import type { ProgressEvent, Scope } from "./types.js";

export type BlobOpener = (signal?: AbortSignal) => NodeJS.ReadableStream | Promise<NodeJS.ReadableStream>;

export interface UploadContext {
  transport: Transport;
  registry: string;
  repository: string;
  chunkSize: number;
  signal?: AbortSignal;
  onProgress?: (ev: ProgressEvent) => void;
}

function pushScopes(repository: string, extra: string[] = []): Scope[] {
  return [{ repository, actions: ["pull", "push"] }, ...extra.map((r): Scope => ({ repository: r, actions: ["pull"] }))];
}

type UploadRequest = Omit<HttpRequest, "registry" | "signal" | "scopes"> & { scopes?: Scope[] };

/** A request about ctx's repository (push and pull scope unless given); its answer's body is drained (status and headers are what count). */
async function ask(ctx: UploadContext, req: UploadRequest): Promise<HttpResponse> {
  const res = await ctx.transport.request({ registry: ctx.registry, scopes: pushScopes(ctx.repository), signal: ctx.signal, ...req });
  await res.body.dump().catch(() => {});
  return res;
}

function location(res: HttpResponse, what: string, registry: string): string {
  const loc = res.header("location");
  if (!loc) throw new OcibuildError("REGISTRY_PROTOCOL", `${what}: ${registry} answered ${res.status} without a Location header`, { details: { registry } });
  return new URL(loc, res.url).toString();
}

function withDigestParam(loc: string, d: Digest): string {
  const u = new URL(loc);
  u.searchParams.set("digest", d);
  return u.toString();
}

/** Try to mount `desc` from each of `from` (same registry). Returns "mounted", or an open upload session. */
export async function tryMount(ctx: UploadContext, desc: Descriptor, from: string[]): Promise<{ mounted: true } | { mounted: false; session?: string }> {
  let session: string | undefined;
  for (const src of from) {
    if (src === ctx.repository) continue;
    const res = await ask(ctx, {
      method: "POST",
      path: `/v2/${ctx.repository}/blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(src)}`,
      headers: { "content-length": "0" },
      scopes: pushScopes(ctx.repository, [src]),
      what: `mount ${desc.digest} from ${src} into ${ctx.repository}`,
      ok: [201, 202],
    });
    if (res.status === 201) {
      if (session) await cancel(ctx, session);
      ctx.onProgress?.({ kind: "mount", digest: desc.digest, bytes: desc.size, total: desc.size });
      return { mounted: true };
    }
    if (session) await cancel(ctx, session);
    session = location(res, "mount", ctx.registry);
  }
  return { mounted: false, session };
}

async function cancel(ctx: UploadContext, session: string): Promise<void> {
  try {
    await ask(ctx, {
      method: "DELETE",
      path: session,
      what: "cancel upload",
      retry: false,
      ok: [200, 202, 204, 404, 405],
    });
  } catch {
    /* best effort: the registry purges abandoned uploads */
  }
}

/**
 * Whether the credentials at hand may push to ctx.repository, asked as
 * go-containerregistry's CheckPushPermission asks it (a token with push scope is not
 * enough on every registry): start an upload session, then cancel it.
 */
export async function checkPushAccess(ctx: UploadContext): Promise<void> {
  const { session } = await startSession(ctx, `check push access to ${ctx.registry}/${ctx.repository}`);
  await cancel(ctx, session);
}

async function startSession(ctx: UploadContext, what: string): Promise<{ session: string; minChunk: number }> {
  const res = await ask(ctx, {
    method: "POST",
    path: `/v2/${ctx.repository}/blobs/uploads/`,
    headers: { "content-length": "0" },
    what,
    ok: [202],
  });
  const minChunk = Number(res.header("oci-chunk-min-length") ?? "0");
  return { session: location(res, what, ctx.registry), minChunk: Number.isFinite(minChunk) ? minChunk : 0 };
}

async function openVerified(open: BlobOpener, desc: Descriptor, signal?: AbortSignal): Promise<Readable> {
  const src = Readable.from((await open(signal)) as AsyncIterable<Buffer>, { objectMode: false });
  const verify = new VerifyingStream(desc.digest, desc.size);
  src.on("error", (e) => verify.destroy(e));
  return src.pipe(verify);
}

/**
 * Upload the bytes of `desc` (not already present). `session` reuses an upload opened by
 * a failed mount. A failure the retry policy deems worth it restarts the upload in a new
 * session, the abandoned one cancelled.
 */
export async function upload(ctx: UploadContext, desc: Descriptor, open: BlobOpener, session?: string): Promise<void> {
  const what = `upload ${desc.digest} to ${ctx.registry}/${ctx.repository}`;
  await ctx.transport.retry.run({ registry: ctx.registry, what: `${what} (restarting)`, signal: ctx.signal }, async () => {
    const current: { location?: string } = { location: session };
    session = undefined;
    try {
      if (desc.size <= ctx.chunkSize) await monolithic(ctx, desc, open, what, current);
      else await chunked(ctx, desc, open, what, current);
    } catch (e) {
      // Leave nothing behind: cancel the abandoned session (best effort, not when interrupted).
      if (current.location && !ctx.signal?.aborted) await cancel(ctx, current.location);
      throw e;
    }
  });
}

async function monolithic(ctx: UploadContext, desc: Descriptor, open: BlobOpener, what: string, current: { location?: string }): Promise<void> {
  const loc = current.location ?? (await startSession(ctx, what)).session;
  current.location = loc;
  let sent = 0;
  await ask(ctx, {
    method: "PUT",
    path: withDigestParam(loc, desc.digest),
    headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) },
    body: async () => {
      const s = await openVerified(open, desc, ctx.signal);
      if (!ctx.onProgress) return s;
      const counter = new Transform({
        transform(c: Buffer, _enc, cb) {
          sent += c.length;
          ctx.onProgress?.({ kind: "push", digest: desc.digest, bytes: sent, total: desc.size });
          cb(null, c);
        },
      });
      s.on("error", (e) => counter.destroy(e));
      return s.pipe(counter);
    },
    what,
    retry: false, // a failed PUT leaves the session unusable: the caller restarts from POST
    ok: [201, 204],
  });
}

/** Cut a stream into buffers of exactly `size` bytes (the last may be shorter). */
async function* fixedChunks(src: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const c of src) {
    let buf = c;
    while (buf.length > 0) {
      const take = Math.min(size - have, buf.length);
      parts.push(buf.subarray(0, take));
      have += take;
      buf = buf.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts);
}

/**
 * `chunks` with the next one read while the caller works on the current one (a
 * PATCH in flight): at most one chunk read ahead. When the caller stops early the
 * pending read is left to settle on its own (the caller destroys the source).
 */
async function* readAhead<T>(chunks: AsyncIterable<T>): AsyncGenerator<T> {
  const it = chunks[Symbol.asyncIterator]();
  let next = it.next();
  let finished = false;
  try {
    for (;;) {
      const r = await next;
      if (r.done) {
        finished = true;
        return;
      }
      next = it.next();
      // Awaited on the next turn; a caller that stops first must not leave it unhandled.
      next.catch(() => {});
      yield r.value;
    }
  } finally {
    if (!finished) void next.then(() => it.return?.(), () => {}).catch(() => {});
  }
}

function rangeEnd(v: string | undefined): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(v?.trim() ?? "");
  return m ? Number(m[1]) : undefined;
}

async function chunked(ctx: UploadContext, desc: Descriptor, open: BlobOpener, what: string, current: { location?: string }): Promise<void> {
  const started = current.location ? { session: current.location, minChunk: 0 } : await startSession(ctx, what);
  current.location = started.session;
  const size = Math.max(ctx.chunkSize, started.minChunk);
  const src = await openVerified(open, desc, ctx.signal);
  let offset = 0; // bytes the registry has
  try {
    for await (const chunk of readAhead(fixedChunks(src as AsyncIterable<Buffer>, size))) {
      await sendChunk(ctx, what, current, chunk, offset);
      offset += chunk.length;
      ctx.onProgress?.({ kind: "push", digest: desc.digest, bytes: offset, total: desc.size });
    }
  } finally {
    src.destroy();
  }
  await ask(ctx, {
    method: "PUT",
    path: withDigestParam(current.location, desc.digest),
    headers: { "content-length": "0" },
    what,
    ok: [201, 204],
  });
  current.location = undefined;
}

/**
 * PATCH one chunk (it starts at byte `chunkStart` of the blob) into the session at
 * current.location. After a retryable failure the registry is asked how much it has,
 * and the rest of the chunk is sent from there; a registry that lost the upload ends
 * it with REGISTRY_UPLOAD_LOST (the caller restarts).
 */
async function sendChunk(ctx: UploadContext, what: string, current: { location?: string }, chunk: Buffer, chunkStart: number): Promise<void> {
  let from = 0; // index into chunk of the first byte not yet acknowledged
  const resume = async (failure: unknown) => {
    const have = await status(ctx, current.location!, what);
    if (have === undefined || have.received < chunkStart || have.received > chunkStart + chunk.length) {
      throw new OcibuildError("REGISTRY_UPLOAD_LOST", `${what}: the registry lost the interrupted upload`, { retryable: true, cause: failure });
    }
    current.location = have.location;
    from = have.received - chunkStart;
  };
  const job = { registry: ctx.registry, what: () => `${what} (resuming at byte ${chunkStart + from})`, signal: ctx.signal, beforeRetry: resume };
  await ctx.transport.retry.run(job, async () => {
    if (from >= chunk.length) return;
    const part = chunk.subarray(from);
    const start = chunkStart + from;
    const res = await ask(ctx, {
      method: "PATCH",
      path: current.location!,
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(part.length),
        "content-range": `${start}-${start + part.length - 1}`,
      },
      body: () => part,
      what: `${what} (bytes ${start}-${start + part.length - 1})`,
      retry: false,
      ok: [202, 204],
    });
    current.location = location(res, what, ctx.registry);
  });
}

/** GET the upload session: how many bytes the registry has (Range: 0-N means N+1). */
async function status(ctx: UploadContext, loc: string, what: string): Promise<{ received: number; location: string } | undefined> {
  try {
    const res = await ask(ctx, {
      method: "GET",
      path: loc,
      what: `${what} (status)`,
      ok: [204],
      followRedirects: false,
    });
    const end = rangeEnd(res.header("range"));
    const next = res.header("location") ? new URL(res.header("location")!, res.url).toString() : loc;
    // Distribution reports "0-0" both for 0 and 1 bytes received; 0 is the only safe reading.
    return { received: end === undefined || end === 0 ? 0 : end + 1, location: next };
  } catch {
    return undefined;
  }
}
