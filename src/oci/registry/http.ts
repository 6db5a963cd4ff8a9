/**
 * The HTTP/1.1 exchange under the registry transport, on node:http and node:https:
 * keep-alive agents (one pair per registry host, TLS settings per host), request
 * bodies streamed, response bodies as streams with `dump()` and a bounded `text()`,
 * repeated headers kept apart, and a stall timeout (see watchProgress).
 *
 * Why not undici: every CLI run paid ~45 ms to initialise it (it loads fetch,
 * websockets and cookies at import) and more to compile its wasm HTTP parser, for a
 * client that only ever needs request/response with keep-alive. node:http parses
 * with the same llhttp, natively, and is already in the process.
 */
import { getMaxListeners, setMaxListeners } from "node:events";
import http, { type IncomingMessage } from "node:http";
import type https from "node:https";
import type { Readable } from "node:stream";
import type { SecureContext } from "node:tls";
import { OcibuildError, optionWords } from "../../errors.js";

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** A response body: a stream of Buffers that can also be drained or read whole. */
export interface ResponseBody extends AsyncIterable<Buffer> {
  /** Read and discard (up to 128 KiB, then drop the connection), so the socket can be reused. */
  dump(): Promise<void>;
  /**
   * The whole body as UTF-8, at most `limit` bytes: a longer body (declared or
   * sent) is dropped and fails with REGISTRY_RESPONSE_TOO_LARGE naming the host.
   */
  text(limit: number): Promise<string>;
  destroy(error?: Error): void;
}

export interface HttpResult {
  statusCode: number;
  headers: ResponseHeaders;
  body: ResponseBody;
}

export interface SendOptions {
  method: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string | Readable;
  signal?: AbortSignal;
  /**
   * A request that moves less than 1 KiB either way for this long while it waits on
   * the host fails with REGISTRY_TIMEOUT naming the host (default 60 s); see watchProgress.
   */
  timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 60_000;
/** Less than this many bytes in a timeout period is a stall, not a slow link. */
const MIN_PROGRESS_BYTES = 1024;

/**
 * The connections to one host: plain and TLS keep-alive pools. node:https (and node:tls
 * under it, ~2 ms to load) is loaded at the first HTTPS request: a build that only talks
 * to a plain-HTTP registry never needs it.
 */
export class HostAgents {
  readonly plain = new http.Agent({ keepAlive: true });
  private tls?: Promise<https.Agent>;
  private made?: https.Agent;

  /** The TLS settings are asked for at the first HTTPS request (CA files are only needed then), once. */
  constructor(private readonly tlsOptions: () => Promise<{ context: SecureContext; rejectUnauthorized: boolean }>) {}

  forUrl(url: URL): Promise<http.Agent> {
    if (url.protocol !== "https:") return Promise.resolve(this.plain);
    if (!this.tls) {
      const p = Promise.all([import("node:https"), this.tlsOptions()]).then(
        ([{ Agent }, o]) => (this.made = new Agent({ keepAlive: true, secureContext: o.context, rejectUnauthorized: o.rejectUnauthorized })),
      );
      // A failure (an unreadable CA file) is reported to this request and asked again by the next.
      p.catch(() => (this.tls = undefined));
      this.tls = p;
    }
    return this.tls;
  }

  close(): void {
    this.plain.destroy();
    this.made?.destroy();
  }
}

const DUMP_LIMIT = 128 * 1024;
const MAX_PARALLEL = 256;

function tooLarge(host: string, limit: number, declared?: number): OcibuildError {
  const size = declared !== undefined ? `is ${declared} bytes` : `is longer than ${limit} bytes`;
  return new OcibuildError("REGISTRY_RESPONSE_TOO_LARGE", `the response from ${host} ${size}, more than the ${limit} bytes such an answer may hold`, {
    details: { host, limit },
  });
}

/** At most `limit` bytes of `res`, or REGISTRY_RESPONSE_TOO_LARGE (the rest is never read). */
async function readLimited(res: IncomingMessage, host: string, limit: number): Promise<Buffer> {
  const declared = Number(res.headers["content-length"] ?? "NaN");
  if (declared > limit) {
    res.destroy();
    throw tooLarge(host, limit, declared);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw tooLarge(host, limit);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function asBody(res: IncomingMessage, host: string): ResponseBody {
  const body = res as IncomingMessage & ResponseBody;
  // A body failed by the stall watch while nobody reads it must not be an uncaught error;
  // a reader still gets the error through its own listener.
  res.on("error", () => {});
  body.dump = () =>
    new Promise<void>((resolve) => {
      // A body received in full is still read out: the socket goes back to the pool at its end.
      if (res.destroyed || res.readableEnded) return resolve();
      let n = 0;
      res.on("data", (c: Buffer) => {
        n += c.length;
        if (n > DUMP_LIMIT) {
          res.destroy();
          resolve();
        }
      });
      res.once("end", () => resolve());
      res.once("close", () => resolve());
      res.once("error", () => resolve());
      res.resume();
    });
  body.text = async (limit: number) => (await readLimited(res, host, limit)).toString("utf8");
  return body;
}

function headersOf(res: IncomingMessage): ResponseHeaders {
  const out: ResponseHeaders = {};
  for (const [k, v] of Object.entries(res.headersDistinct)) if (v) out[k] = v.length === 1 ? v[0] : v;
  return out;
}

function timedOut(host: string, timeoutMs: number): OcibuildError {
  const s = timeoutMs >= 1000 ? `${Math.round(timeoutMs / 100) / 10} s` : `${timeoutMs} ms`;
  return new OcibuildError("REGISTRY_TIMEOUT", `${host} moved less than ${MIN_PROGRESS_BYTES} bytes in ${s}: the connection is stalled`, {
    retryable: true,
    details: { host, timeoutMs },
    hint: `a registry that is slow to answer (committing a very large blob, say) needs a longer ${optionWords("registry.timeoutSeconds")}`,
  });
}

/**
 * Fails `req` when its connection stalls: a socket idle timeout alone never fires
 * on a host that trickles a byte every few seconds, so what counts is progress,
 * at least MIN_PROGRESS_BYTES read or written per `timeoutMs`. Time spent waiting on
 * our side does not count: a response body whose buffer is full (its reader is
 * busy), or a request body whose source has nothing queued yet. The watch ends
 * when the response has arrived whole or the request closes.
 */
function watchProgress(req: http.ClientRequest, host: string, timeoutMs: number): void {
  let res: IncomingMessage | undefined;
  let base = 0;
  let since = Date.now();
  const moved = () => (req.socket ? req.socket.bytesRead + req.socket.bytesWritten : 0);
  const waitingOnUs = () => {
    if (res !== undefined) return res.readableLength >= res.readableHighWaterMark;
    const s = req.socket;
    return s !== null && !req.writableEnded && req.writableLength === 0 && s.writableLength === 0;
  };
  const tick = setInterval(() => {
    if (res?.complete) return clearInterval(tick);
    const now = Date.now();
    if (moved() - base >= MIN_PROGRESS_BYTES || waitingOnUs()) {
      base = moved();
      since = now;
    } else if (now - since >= timeoutMs) {
      clearInterval(tick);
      const err = timedOut(host, timeoutMs);
      res?.destroy(err);
      req.destroy(err);
    }
  }, Math.max(10, Math.min(1000, timeoutMs / 4)));
  tick.unref();
  // A reused keep-alive socket has counted earlier requests' bytes: start from its count now.
  req.once("socket", (s) => {
    base = s.bytesRead + s.bytesWritten;
    since = Date.now();
  });
  req.once("response", (r) => (res = r));
  req.once("close", () => clearInterval(tick));
}

/**
 * What http.request's own `signal` option does (an AbortError destroys the request, and
 * its response), without the end-of-stream watch Node sets up for it: that cost ~0.7 ms
 * at a process's first request.
 */
function abortWith(req: http.ClientRequest, signal: AbortSignal): void {
  const onAbort = () => req.destroy(Object.assign(new Error("The operation was aborted", { cause: signal.reason }), { name: "AbortError", code: "ABORT_ERR" }));
  if (signal.aborted) return void process.nextTick(onAbort);
  signal.addEventListener("abort", onAbort, { once: true });
  req.once("close", () => signal.removeEventListener("abort", onAbort));
}

/**
 * One request; resolves when the response head has arrived (the body is then the caller's
 * to read or dump). An https: URL goes through its host's https.Agent (HostAgents.forUrl),
 * which makes the TLS connection: node:http's request takes the agent's protocol as the
 * one expected (and throws ERR_INVALID_PROTOCOL on a mismatch), so node:https itself is
 * not needed here.
 */
export function send(url: URL, agent: http.Agent, o: SendOptions): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    let settled = false;
    // One abort listener per request in flight, on the caller's one signal: parallel blob
    // transfers pass Node's default of 10 without any leak (each is removed when its
    // request closes), so the warning's threshold is raised for that signal first.
    if (o.signal && getMaxListeners(o.signal) < MAX_PARALLEL) setMaxListeners(MAX_PARALLEL, o.signal);
    const req = http.request(url, { method: o.method, headers: o.headers, agent });
    if (o.signal) abortWith(req, o.signal);
    // Errors after the head reach the body stream (an aborted or truncated body); this
    // listener keeps them from being unhandled on the request too.
    req.on("error", (e) => {
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    watchProgress(req, url.host, o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    req.on("response", (res) => {
      settled = true;
      resolve({ statusCode: res.statusCode ?? 0, headers: headersOf(res), body: asBody(res, url.host) });
    });
    const b = o.body;
    if (b === undefined) req.end();
    else if (typeof b === "string" || b instanceof Uint8Array) req.end(b);
    else {
      b.once("error", (e) => req.destroy(e));
      // A request that ends early (an error, an early answer, a retry) releases its
      // source (a file stream, say) instead of leaving it open.
      req.once("close", () => {
        if (!b.readableEnded) b.destroy();
      });
      b.pipe(req);
    }
  });
}
