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
import { isRetryableNetworkError } from "./errors.js";
import { type HttpResponse, reasonOf, sleep, type Transport } from "./transport.js";
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
    const res = await ctx.transport.request({
      method: "POST",
      registry: ctx.registry,
      path: `/v2/${ctx.repository}/blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(src)}`,
      headers: { "content-length": "0" },
      scopes: pushScopes(ctx.repository, [src]),
      what: `mount ${desc.digest} from ${src} into ${ctx.repository}`,
      signal: ctx.signal,
      ok: [201, 202],
    });
    await res.body.dump().catch(() => {});
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
    const res = await ctx.transport.request({
      method: "DELETE",
      registry: ctx.registry,
      path: session,
      scopes: pushScopes(ctx.repository),
      what: "cancel upload",
      signal: ctx.signal,
      retry: false,
      ok: [200, 202, 204, 404, 405],
    });
    await res.body.dump().catch(() => {});
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
  const res = await ctx.transport.request({
    method: "POST",
    registry: ctx.registry,
    path: `/v2/${ctx.repository}/blobs/uploads/`,
    headers: { "content-length": "0" },
    scopes: pushScopes(ctx.repository),
    what,
    signal: ctx.signal,
    ok: [202],
  });
  await res.body.dump().catch(() => {});
  const minChunk = Number(res.header("oci-chunk-min-length") ?? "0");
  return { session: location(res, what, ctx.registry), minChunk: Number.isFinite(minChunk) ? minChunk : 0 };
}

async function openVerified(open: BlobOpener, desc: Descriptor, signal?: AbortSignal): Promise<Readable> {
  const src = Readable.from((await open(signal)) as AsyncIterable<Buffer>, { objectMode: false });
  const verify = new VerifyingStream(desc.digest, desc.size);
  src.on("error", (e) => verify.destroy(e));
  return src.pipe(verify);
}

/** Upload the bytes of `desc` (not already present). `session` reuses an upload opened by a failed mount. */
export async function upload(ctx: UploadContext, desc: Descriptor, open: BlobOpener, session?: string): Promise<void> {
  const what = `upload ${desc.digest} to ${ctx.registry}/${ctx.repository}`;
  const max = ctx.transport.attempts;
  for (let attempt = 1; ; attempt++) {
    const current: { location?: string } = { location: session };
    try {
      if (desc.size <= ctx.chunkSize) await monolithic(ctx, desc, open, what, current);
      else await chunked(ctx, desc, open, what, current);
      return;
    } catch (e) {
      session = undefined;
      // Leave nothing behind: cancel the abandoned session (best effort, not when interrupted).
      if (current.location && !ctx.signal?.aborted) await cancel(ctx, current.location);
      if (ctx.signal?.aborted || !isRetryableNetworkError(e) || attempt >= max) throw e;
      const delayMs = ctx.transport.backoff(attempt);
      ctx.transport.retrying({ registry: ctx.registry, what: `${what} (restarting)`, attempt, delayMs, reason: reasonOf(e) });
      await sleep(delayMs, ctx.signal);
    }
  }
}

async function monolithic(ctx: UploadContext, desc: Descriptor, open: BlobOpener, what: string, current: { location?: string }): Promise<void> {
  const loc = current.location ?? (await startSession(ctx, what)).session;
  current.location = loc;
  let sent = 0;
  const res = await ctx.transport.request({
    method: "PUT",
    registry: ctx.registry,
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
    scopes: pushScopes(ctx.repository),
    what,
    signal: ctx.signal,
    retry: false, // a failed PUT leaves the session unusable: the caller restarts from POST
    ok: [201, 204],
  });
  await res.body.dump().catch(() => {});
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

function rangeEnd(v: string | undefined): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(v?.trim() ?? "");
  return m ? Number(m[1]) : undefined;
}

async function chunked(ctx: UploadContext, desc: Descriptor, open: BlobOpener, what: string, current: { location?: string }): Promise<void> {
  const started = current.location ? { session: current.location, minChunk: 0 } : await startSession(ctx, what);
  let loc = started.session;
  current.location = loc;
  const size = Math.max(ctx.chunkSize, started.minChunk);
  const src = await openVerified(open, desc, ctx.signal);
  let offset = 0; // bytes the registry has
  try {
    for await (const chunk of fixedChunks(src as AsyncIterable<Buffer>, size)) {
      const chunkStart = offset;
      let from = 0; // index into chunk of the first byte not yet acknowledged
      for (let attempt = 1; from < chunk.length; attempt++) {
        const part = chunk.subarray(from);
        const start = chunkStart + from;
        try {
          const res = await ctx.transport.request({
            method: "PATCH",
            registry: ctx.registry,
            path: loc,
            headers: {
              "content-type": "application/octet-stream",
              "content-length": String(part.length),
              "content-range": `${start}-${start + part.length - 1}`,
            },
            body: () => part,
            scopes: pushScopes(ctx.repository),
            what: `${what} (bytes ${start}-${start + part.length - 1})`,
            signal: ctx.signal,
            retry: false,
            ok: [202, 204],
          });
          await res.body.dump().catch(() => {});
          loc = location(res, what, ctx.registry);
          current.location = loc;
          from = chunk.length;
        } catch (e) {
          if (ctx.signal?.aborted || !isRetryableNetworkError(e) || attempt >= ctx.transport.attempts) throw e;
          const delayMs = ctx.transport.backoff(attempt);
          ctx.transport.retrying({ registry: ctx.registry, what: `${what} (resuming at byte ${start})`, attempt, delayMs, reason: reasonOf(e) });
          await sleep(delayMs, ctx.signal);
          // Ask the registry how much it has, and resume from there.
          const have = await status(ctx, loc, what);
          if (have === undefined || have.received < chunkStart || have.received > chunkStart + chunk.length) {
            throw new OcibuildError("REGISTRY_UPLOAD_LOST", `${what}: the registry lost the interrupted upload`, { retryable: true, cause: e });
          }
          loc = have.location;
          current.location = loc;
          from = have.received - chunkStart;
        }
      }
      offset = chunkStart + chunk.length;
      ctx.onProgress?.({ kind: "push", digest: desc.digest, bytes: offset, total: desc.size });
    }
  } finally {
    src.destroy();
  }
  const res = await ctx.transport.request({
    method: "PUT",
    registry: ctx.registry,
    path: withDigestParam(loc, desc.digest),
    headers: { "content-length": "0" },
    scopes: pushScopes(ctx.repository),
    what,
    signal: ctx.signal,
    ok: [201, 204],
  });
  await res.body.dump().catch(() => {});
  current.location = undefined;
}

/** GET the upload session: how many bytes the registry has (Range: 0-N means N+1). */
async function status(ctx: UploadContext, loc: string, what: string): Promise<{ received: number; location: string } | undefined> {
  try {
    const res = await ctx.transport.request({
      method: "GET",
      registry: ctx.registry,
      path: loc,
      scopes: pushScopes(ctx.repository),
      what: `${what} (status)`,
      signal: ctx.signal,
      ok: [204],
      followRedirects: false,
    });
    await res.body.dump().catch(() => {});
    const end = rangeEnd(res.header("range"));
    const next = res.header("location") ? new URL(res.header("location")!, res.url).toString() : loc;
    // Distribution reports "0-0" both for 0 and 1 bytes received; 0 is the only safe reading.
    return { received: end === undefined || end === 0 ? 0 : end + 1, location: next };
  } catch {
    return undefined;
  }
}
