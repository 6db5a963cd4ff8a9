/**
 * The one retry policy on its own: the backoff's bounds, Retry-After, the attempt
 * limit, the events, and the abort signal ending a wait.
 */
import { describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { isRetryableNetworkError, isRetryableStatus, parseRetryAfter, reasonOf, RetryPolicy } from "../../../src/oci/registry/retry.js";
import type { RetryEvent } from "../../../src/oci/registry/types.js";

const reset = () => Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});

describe("what is retryable", () => {
  it("408, 429 and the transient 5xx; network codes anywhere in the cause chain; coded errors by their flag", () => {
    expect([408, 429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 501, 505].some(isRetryableStatus)).toBe(false);
    expect(isRetryableNetworkError(new Error("wrapped", { cause: reset() }))).toBe(true);
    expect(isRetryableNetworkError(new Error("no code"))).toBe(false);
    expect(isRetryableNetworkError(new OcibuildError("REGISTRY_TIMEOUT", "stalled", { retryable: true }))).toBe(true);
    expect(isRetryableNetworkError(new OcibuildError("DIGEST_MISMATCH", "bad bytes"))).toBe(false);
    expect(reasonOf(new Error("wrapped", { cause: reset() }))).toBe("ECONNRESET");
    expect(reasonOf(new Error("plain"))).toBe("plain");
  });
});

describe("RetryPolicy", () => {
  it("backs off exponentially from the base delay, capped, within the upper half of each step", () => {
    const low = new RetryPolicy({ retry: { baseDelayMs: 100, maxDelayMs: 1000 } }, () => 0);
    const high = new RetryPolicy({ retry: { baseDelayMs: 100, maxDelayMs: 1000 } }, () => 0.999999);
    expect([1, 2, 3, 4, 5, 6].map((n) => low.backoff(n))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 6].map((n) => high.backoff(n))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it("retries what can be fixed up to the attempt limit, reporting each retry, then throws the last error", async () => {
    const events: RetryEvent[] = [];
    const p = new RetryPolicy({ retry: { attempts: 3, baseDelayMs: 4, maxDelayMs: 4 }, onRetry: (e) => events.push(e) });
    let calls = 0;
    const err = await p
      .run({ registry: "r.example", what: "get thing" }, async () => {
        calls++;
        throw reset();
      })
      .catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("ECONNRESET");
    expect(calls).toBe(3);
    expect(events).toEqual([
      { registry: "r.example", what: "get thing", attempt: 1, delayMs: expect.any(Number), reason: "ECONNRESET" },
      { registry: "r.example", what: "get thing", attempt: 2, delayMs: expect.any(Number), reason: "ECONNRESET" },
    ]);
    expect(events.every((e) => e.delayMs >= 2 && e.delayMs <= 4)).toBe(true);
  });

  it("does not retry what cannot be fixed", async () => {
    const p = new RetryPolicy({ retry: { attempts: 5, baseDelayMs: 1 } });
    let calls = 0;
    const bad = new OcibuildError("DIGEST_MISMATCH", "bad bytes");
    await expect(
      p.run({ registry: "r", what: "x" }, async () => {
        calls++;
        throw bad;
      }),
    ).rejects.toBe(bad);
    expect(calls).toBe(1);
  });

  it("retries an answer with Retry-After (capped at 60 s) and hands back the last one when attempts run out", async () => {
    const events: RetryEvent[] = [];
    const p = new RetryPolicy({ retry: { attempts: 2, baseDelayMs: 1 }, onRetry: (e) => events.push(e) });
    let released = 0;
    const answer = await p.run(
      { registry: "r", what: "x", retryResult: (n: number) => (n < 10 ? { reason: "HTTP 429", status: 429, retryAfter: "0", release: async () => void released++ } : undefined) },
      async (n) => n,
    );
    expect(answer).toBe(2);
    expect(released).toBe(1);
    expect(events).toEqual([{ registry: "r", what: "x", attempt: 1, delayMs: 0, reason: "HTTP 429", status: 429 }]);
  });

  it("ends a wait with ABORTED when the signal fires, and runs beforeRetry only after a wait", async () => {
    const ac = new AbortController();
    const p = new RetryPolicy({ retry: { attempts: 3 } });
    let before = 0;
    const started = Date.now();
    setTimeout(() => ac.abort(new Error("stop")), 50);
    const err = (await p
      .run({ registry: "r", what: "x", signal: ac.signal, beforeRetry: async () => void before++, retryResult: () => ({ reason: "HTTP 503", retryAfter: "30" }) }, async () => 1)
      .catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("ABORTED");
    expect(Date.now() - started).toBeLessThan(5000);
    expect(before).toBe(0);
  });

  it("refuses a timeout that is not a positive number of seconds", () => {
    expect(() => new RetryPolicy({ timeoutSeconds: 0 })).toThrow(expect.objectContaining({ code: "REGISTRY_OPTIONS_INVALID" }));
    expect(new RetryPolicy({ timeoutSeconds: 1.5 }).timeoutMs).toBe(1500);
  });
});
