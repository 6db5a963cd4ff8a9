/**
 * A blob download that survives a broken connection: on a reset or a truncated
 * body it asks again with `Range: bytes=N-` (or skips N bytes of a full answer),
 * and the whole stream is verified against the digest (and size) as it flows.
 * A digest mismatch is never retried into success.
 */
import { PassThrough, type Readable, pipeline } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { type Digest, VerifyingStream } from "../digest.js";
import { networkError } from "./errors.js";
import type { HttpResponse, Transport } from "./transport.js";
import type { Scope } from "./types.js";

export interface BlobReadSpec {
  registry: string;
  repository: string;
  digest: Digest;
  size?: number;
  what: string;
  signal?: AbortSignal;
  onBytes?: (total: number) => void;
}

function contentRangeStart(v: string | undefined): number | undefined {
  const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(v?.trim() ?? "");
  return m ? Number(m[1]) : undefined;
}

function requestFrom(t: Transport, spec: BlobReadSpec, offset: number): Promise<HttpResponse> {
  const scopes: Scope[] = [{ repository: spec.repository, actions: ["pull"] }];
  return t.request({
      method: "GET",
      registry: spec.registry,
      path: `/v2/${spec.repository}/blobs/${spec.digest}`,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      scopes,
      what: spec.what,
      signal: spec.signal,
      ok: offset > 0 ? [200, 206] : [200],
    });
}

/** The bytes of `first` and, after a failure the retry policy deems worth it, of requests resuming where it stopped. */
async function* chunks(t: Transport, spec: BlobReadSpec, first: HttpResponse): AsyncGenerator<Buffer> {
  let offset = 0;
  const tries = t.retry.start({ registry: spec.registry, what: () => `${spec.what} (resuming at byte ${offset})`, signal: spec.signal });
  for (let res = first; ; res = await requestFrom(t, spec, offset)) {
    const skip = offset > 0 ? resumeSkip(res, spec, offset) : 0;
    try {
      for await (const chunk of skipped(res.body as AsyncIterable<Buffer>, skip, spec)) {
        offset += chunk.length;
        spec.onBytes?.(offset);
        yield chunk;
      }
      return;
    } catch (e) {
      res.body.destroy();
      try {
        await tries.failed(e);
      } catch (final) {
        throw networkError(spec.registry, `${spec.what} (after ${offset} bytes)`, final);
      }
    }
  }
}

/** How many bytes of a resumed answer to drop: none of a 206 that starts at `offset`, all we have of a full 200. */
function resumeSkip(res: HttpResponse, spec: BlobReadSpec, offset: number): number {
  if (res.status !== 206) return offset;
  const start = contentRangeStart(res.header("content-range"));
  if (start === offset) return 0;
  res.body.destroy();
  throw new OcibuildError("REGISTRY_BAD_RANGE", `${spec.what}: asked to resume at byte ${offset} but ${spec.registry} answered ${res.header("content-range") ?? "no Content-Range"}`, {
    details: { registry: spec.registry },
  });
}

/** `body` without its first `skip` bytes; fewer than `skip` bytes is a truncated answer (retryable). */
async function* skipped(body: AsyncIterable<Buffer>, skip: number, spec: BlobReadSpec): AsyncGenerator<Buffer> {
  for await (const c of body) {
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    yield skip > 0 ? c.subarray(skip) : c;
    skip = 0;
  }
  if (skip > 0) throw new OcibuildError("REGISTRY_TRUNCATED", `${spec.what}: ${spec.registry} sent fewer bytes than already received`, { retryable: true });
}

/**
 * The verified byte stream of a blob. The first request is made before this
 * resolves (a 404 rejects); later errors (DIGEST_MISMATCH, REGISTRY_*) surface on the stream.
 */
export async function readBlob(t: Transport, spec: BlobReadSpec): Promise<Readable> {
  const first = await requestFrom(t, spec, 0);
  const verifier = new VerifyingStream(spec.digest, spec.size);
  const out = new PassThrough();
  pipeline(
    (async function* () {
      yield* chunks(t, spec, first);
    })(),
    verifier,
    out,
    (err) => {
      if (err && !out.destroyed) out.destroy(err);
    },
  );
  return out;
}
