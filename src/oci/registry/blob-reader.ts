/**
 * A blob download that survives a broken connection: on a reset or a truncated
 * body it asks again with `Range: bytes=N-` (or skips N bytes of a full answer),
 * and the whole stream is verified against the digest (and size) as it flows.
 * A digest mismatch is never retried into success.
 */
import { PassThrough, type Readable, pipeline } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { type Digest, VerifyingStream } from "../digest.js";
import { isRetryableNetworkError, networkError } from "./errors.js";
import { type HttpResponse, reasonOf, sleep, type Transport } from "./transport.js";
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

async function* chunks(t: Transport, spec: BlobReadSpec, first: HttpResponse): AsyncGenerator<Buffer> {
  let offset = 0;
  let retries = 0;
  for (;;) {
    const res = offset === 0 && retries === 0 ? first : await requestFrom(t, spec, offset);
    let skip = 0;
    if (offset > 0) {
      if (res.status === 206) {
        const start = contentRangeStart(res.header("content-range"));
        if (start !== offset) {
          res.body.destroy();
          throw new OcibuildError("REGISTRY_BAD_RANGE", `${spec.what}: asked to resume at byte ${offset} but ${spec.registry} answered ${res.header("content-range") ?? "no Content-Range"}`, {
            details: { registry: spec.registry },
          });
        }
      } else skip = offset; // a full answer: drop what we already have
    }
    try {
      for await (const c of res.body as AsyncIterable<Buffer>) {
        let chunk = c;
        if (skip > 0) {
          if (chunk.length <= skip) {
            skip -= chunk.length;
            continue;
          }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        offset += chunk.length;
        spec.onBytes?.(offset);
        yield chunk;
      }
      if (skip > 0) {
        throw new OcibuildError("REGISTRY_TRUNCATED", `${spec.what}: ${spec.registry} sent fewer bytes than already received`, { retryable: true });
      }
      return;
    } catch (e) {
      res.body.destroy();
      if (spec.signal?.aborted) throw new OcibuildError("ABORTED", "the operation was interrupted", { cause: spec.signal.reason });
      if (isRetryableNetworkError(e) && retries + 1 < t.attempts) {
        retries++;
        const delayMs = t.backoff(retries);
        t.retrying({ registry: spec.registry, what: `${spec.what} (resuming at byte ${offset})`, attempt: retries, delayMs, reason: reasonOf(e) });
        await sleep(delayMs, spec.signal);
        continue;
      }
      throw networkError(spec.registry, `${spec.what} (after ${offset} bytes)`, e);
    }
  }
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
