/**
 * The one retry policy of the registry client. It alone decides which failures
 * are worth another attempt (network errors, 408/429/5xx, errors marked retryable),
 * how long to wait (Retry-After up to 60 s, else exponential backoff with jitter),
 * how many attempts a job gets, and it reports each retry to
 * RegistryOptions.onRetry before waiting. The wait ends early, with ABORTED, when
 * the job's signal fires. It also holds the stall timeout each attempt gets
 * (RegistryOptions.timeoutSeconds, enforced by http.ts).
 *
 * Every retry loop goes through it: whole requests (transport.ts), token requests,
 * upload restarts and chunk resumes (upload.ts), blob download resumes
 * (blob-reader.ts) and manifest body reads (client.ts).
 */
import { OcibuildError } from "../../errors.js";
import { firstHeader } from "./exchange.js";
import { DEFAULT_TIMEOUT_MS, type HttpResult } from "./http.js";
import type { RegistryOptions, RetryEvent } from "./types.js";

/** Retry-After is honoured up to this long; a longer one waits this long. */
const MAX_RETRY_AFTER_MS = 60_000;

const NETWORK_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** The error and the causes under it, outermost first (at most five deep). */
export function causeChain(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let cur: unknown = e; cur && out.length < 5; cur = (cur as { cause?: unknown }).cause) out.push(cur);
  return out;
}

/** An error's string `code`, if it has one. */
export function codeOf(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === "string" ? c : undefined;
}

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** A transport failure (reset, refused, timeout, truncated body) that a retry could fix. */
export function isRetryableNetworkError(e: unknown): boolean {
  if (e instanceof OcibuildError) return e.retryable;
  return causeChain(e).some((c) => NETWORK_CODES.has(codeOf(c) ?? ""));
}

/** A short reason for a transport failure: its code, else its message. */
export function reasonOf(e: unknown): string {
  const code = causeChain(e).map(codeOf).find((c) => c !== undefined);
  return code ?? (e as Error)?.message ?? String(e);
}

/** Retry-After as milliseconds (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(v: string | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function abortError(signal: AbortSignal): OcibuildError {
  return new OcibuildError("ABORTED", "the operation was interrupted", { cause: signal.reason });
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Why an attempt that did not throw is tried again (a retryable status). */
export interface RetryCause {
  /** "HTTP 503" */
  reason: string;
  status?: number;
  /** The response's Retry-After header, if any. */
  retryAfter?: string;
  /** Let go of the answer (drain its body) before waiting. */
  release?: () => Promise<void>;
}

/** One job retried by the policy: what the retry events say, and what stops it. */
export interface RetryJob<T = unknown> {
  registry: string;
  /** What is being done, for the retry events; a function when it changes between attempts. */
  what: string | (() => string);
  signal?: AbortSignal;
  /** An answer to try again (a retryable status); undefined keeps it. */
  retryResult?: (result: T) => RetryCause | undefined;
  /** Called after the wait, before the next attempt; what it throws ends the job. */
  beforeRetry?: (failure: unknown) => Promise<void>;
}

/** A retryable status as a cause to retry (undefined for any other status). */
export function statusCause(res: HttpResult): RetryCause | undefined {
  if (!isRetryableStatus(res.statusCode)) return undefined;
  return {
    reason: `HTTP ${res.statusCode}`,
    status: res.statusCode,
    retryAfter: firstHeader(res.headers["retry-after"]),
    release: () => res.body.dump().catch(() => {}),
  };
}

/**
 * The attempts of one job, for loops that cannot be a single callback (a generator
 * that resumes a download): `failed(e)` after each failure either throws or waits.
 */
export class Attempts<T = unknown> {
  private n = 1;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly job: RetryJob<T>,
  ) {}

  /** The attempt under way (1-based). */
  get attempt(): number {
    return this.n;
  }

  /**
   * After the attempt failed with `e`: throws ABORTED when the job's signal fired,
   * `e` itself when it is not retryable or no attempt is left; otherwise reports the
   * retry, waits, and returns.
   */
  async failed(e: unknown): Promise<void> {
    const { signal } = this.job;
    if (signal?.aborted) throw abortError(signal);
    if (!isRetryableNetworkError(e) || this.n >= this.policy.attempts) throw e;
    await this.wait({ reason: reasonOf(e) });
    await this.job.beforeRetry?.(e);
  }

  /** After the attempt answered with `cause` (a 503, say): false when no attempt is left; else releases it, reports, waits, true. */
  async again(cause: RetryCause): Promise<boolean> {
    if (this.n >= this.policy.attempts) return false;
    await cause.release?.();
    await this.wait(cause);
    await this.job.beforeRetry?.(cause);
    return true;
  }

  private async wait(cause: RetryCause): Promise<void> {
    const after = parseRetryAfter(cause.retryAfter);
    const delayMs = after !== undefined ? Math.min(after, MAX_RETRY_AFTER_MS) : this.policy.backoff(this.n);
    const what = typeof this.job.what === "string" ? this.job.what : this.job.what();
    const ev: RetryEvent = { registry: this.job.registry, what, attempt: this.n, delayMs, reason: cause.reason };
    if (cause.status !== undefined) ev.status = cause.status;
    this.policy.report(ev);
    this.n++;
    await sleep(delayMs, this.job.signal);
  }
}

export class RetryPolicy {
  /** Attempts per job, the first included (RetryOptions.attempts, default 5). */
  readonly attempts: number;
  /** An attempt whose connection stalls this long fails with REGISTRY_TIMEOUT (RegistryOptions.timeoutSeconds). */
  readonly timeoutMs: number;
  private readonly baseDelay: number;
  private readonly maxDelay: number;
  private readonly onRetry?: (ev: RetryEvent) => void;

  constructor(opts: Pick<RegistryOptions, "retry" | "onRetry" | "timeoutSeconds"> = {}, private readonly random: () => number = Math.random) {
    const t = opts.timeoutSeconds;
    if (t !== undefined && !(t > 0 && Number.isFinite(t))) {
      throw new OcibuildError("REGISTRY_OPTIONS_INVALID", `the registry timeout must be a positive number of seconds, not ${t}`);
    }
    this.timeoutMs = t === undefined ? DEFAULT_TIMEOUT_MS : Math.ceil(t * 1000);
    this.attempts = Math.max(1, opts.retry?.attempts ?? 5);
    this.baseDelay = opts.retry?.baseDelayMs ?? 250;
    this.maxDelay = opts.retry?.maxDelayMs ?? 10_000;
    this.onRetry = opts.onRetry;
  }

  /** The wait after failed attempt `n` (1-based): exponential from the base delay, capped, the upper half jittered. */
  backoff(n: number): number {
    const exp = Math.min(this.maxDelay, this.baseDelay * 2 ** (n - 1));
    return Math.round(exp / 2 + (this.random() * exp) / 2);
  }

  report(ev: RetryEvent): void {
    this.onRetry?.(ev);
  }

  start<T>(job: RetryJob<T>): Attempts<T> {
    return new Attempts(this, job);
  }

  /**
   * Run `attempt` until it succeeds, throws what no retry can fix, or the attempts
   * run out (then the last error is thrown, or the last answer returned).
   */
  async run<T>(job: RetryJob<T>, attempt: (n: number) => Promise<T>): Promise<T> {
    const tries = this.start(job);
    for (;;) {
      let result: T;
      try {
        result = await attempt(tries.attempt);
      } catch (e) {
        await tries.failed(e);
        continue;
      }
      const cause = job.retryResult?.(result);
      if (!cause || !(await tries.again(cause))) return result;
    }
  }
}
