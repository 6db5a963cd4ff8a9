/**
 * HTTP to registries: scheme choice (HTTPS first; plain HTTP for insecure and
 * loopback registries, like Docker), per-host TLS (system CAs,
 * NODE_EXTRA_CA_CERTS, per-registry CA files, skip-verify), the challenge/auth
 * flow, redirects, and retries with exponential backoff, jitter and Retry-After.
 */
import type { Agent } from "node:http";
import type { Readable } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { VERSION } from "../../version.js";
import { Authenticator, type TokenSender } from "../auth/authenticator.js";
import { mergeScopes, parseChallenges, scopesFromChallenge } from "../auth/challenge.js";
import { CredentialStore } from "../auth/config.js";
import { httpError, isCertificateError, isRetryableNetworkError, isRetryableStatus, networkError, readErrorBody } from "./errors.js";
import { DEFAULT_TIMEOUT_MS, HostAgents, send, type HttpResult, type ResponseBody } from "./http.js";
import { hostOf, isLoopbackHost } from "./hosts.js";
import { TlsTrust } from "./tls.js";
import type { RegistryOptions, RetryEvent, Scope } from "./types.js";

export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface HttpRequest {
  method: Method;
  /** The logical registry (host[:port]; "docker.io" is served by registry-1.docker.io). */
  registry: string;
  /** A path ("/v2/...") or a URL (absolute, or relative as in a Location header). */
  path: string;
  headers?: Record<string, string>;
  /** Called once per attempt so that a retry re-sends the whole body. */
  body?: () => Uint8Array | string | Readable | Promise<Uint8Array | string | Readable>;
  scopes?: Scope[];
  /** What we were doing, for messages ("GET manifest of app:v1"). */
  what: string;
  signal?: AbortSignal;
  /** Retry on network errors, 429 and 5xx (default true). */
  retry?: boolean;
  /** Statuses handed back to the caller; others become errors. Default: 2xx. */
  ok?: number[];
  /** Follow 3xx (default: GET and HEAD). */
  followRedirects?: boolean;
}

export interface HttpResponse {
  status: number;
  url: URL;
  headers: Record<string, string | string[] | undefined>;
  body: ResponseBody;
  header(name: string): string | undefined;
}

/** A token service's answer is a few KiB of JSON; more is not a token. */
export const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

export { hostOf, isLoopbackHost };

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

/** Retry-After as milliseconds (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(v: string | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function firstHeader(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}

/** A short reason for a transport failure: its code, else its message. */
export function reasonOf(e: unknown): string {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return (e as Error)?.message ?? String(e);
}

function abortError(signal: AbortSignal): OcibuildError {
  return new OcibuildError("ABORTED", "the operation was interrupted", { cause: signal.reason });
}

export class Transport {
  readonly auth: Authenticator;
  readonly attempts: number;
  private readonly baseDelay: number;
  private readonly maxDelay: number;
  private readonly agents = new Map<string, HostAgents>();
  /** CAs, client certificates and verification per host (tls.ts). */
  private readonly tls: TlsTrust;
  private readonly bases = new Map<string, Promise<string>>();
  private readonly userAgent: string;
  /** A request stalled this long fails with REGISTRY_TIMEOUT (RegistryOptions.timeoutSeconds). */
  private readonly timeoutMs: number;

  constructor(private readonly opts: RegistryOptions = {}) {
    const t = opts.timeoutSeconds;
    if (t !== undefined && !(t > 0 && Number.isFinite(t))) {
      throw new OcibuildError("REGISTRY_OPTIONS_INVALID", `the registry timeout must be a positive number of seconds, not ${t}`);
    }
    this.timeoutMs = t === undefined ? DEFAULT_TIMEOUT_MS : Math.ceil(t * 1000);
    this.attempts = Math.max(1, opts.retry?.attempts ?? 5);
    this.baseDelay = opts.retry?.baseDelayMs ?? 250;
    this.maxDelay = opts.retry?.maxDelayMs ?? 10_000;
    this.userAgent = opts.userAgent ?? `ocibuild/${VERSION}`;
    this.tls = new TlsTrust(opts, (host) => this.skipVerify(host));
    const sender: TokenSender = (url, init) => this.sendToken(url, init);
    this.auth = new Authenticator(new CredentialStore({ authConfigPath: opts.authConfigPath, env: opts.env ?? {} }), sender);
  }

  /** Report a retry to RegistryOptions.onRetry. */
  retrying(ev: RetryEvent): void {
    this.opts.onRetry?.(ev);
  }

  /** Backoff before attempt `n` (1-based retry count): exponential with jitter, capped. */
  backoff(n: number): number {
    const exp = Math.min(this.maxDelay, this.baseDelay * 2 ** (n - 1));
    return Math.round(exp / 2 + (Math.random() * exp) / 2);
  }

  private inList(list: string[] | undefined, host: string): boolean {
    return (list ?? []).some((h) => hostOf(h).toLowerCase() === host.toLowerCase());
  }

  /** May this host be spoken to over plain HTTP? */
  mayUseHttp(host: string): boolean {
    const mirrors = [...(this.opts.registryMirrors ?? []), ...Object.values(this.opts.registryMap ?? {}).flat()];
    return this.opts.insecureAll === true || isLoopbackHost(host) || this.inList(this.opts.insecureRegistries, host) || mirrors.some((m) => m.startsWith("http://") && hostOf(m) === host);
  }

  private skipVerify(host: string): boolean {
    return this.opts.skipTlsVerify === true || this.opts.insecureAll === true || this.inList(this.opts.skipTlsVerifyRegistries, host) || this.inList(this.opts.insecureRegistries, host);
  }

  /** The connection pools for a URL's host (plain or TLS by its scheme). */
  private dispatcher(url: URL): Promise<Agent> {
    let a = this.agents.get(url.host);
    if (!a) {
      const host = url.host;
      a = new HostAgents(() => this.tls.options(host));
      this.agents.set(host, a);
    }
    return a.forUrl(url);
  }

  /** Does a registry answer /v2/ over plain HTTP (its API version header, 200 or 401)? */
  private async speaksPlainRegistry(host: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const url = new URL(`http://${host}/v2/`);
      const res = await send(url, await this.dispatcher(url), { method: "GET", headers: { "user-agent": this.userAgent }, signal, timeoutMs: Math.min(10_000, this.timeoutMs) });
      await res.body.dump();
      return res.headers["docker-distribution-api-version"] !== undefined && (res.statusCode === 200 || res.statusCode === 401);
    } catch {
      if (signal?.aborted) throw abortError(signal);
      return false;
    }
  }

  /** The base URL (scheme://host) for a registry, probing HTTPS then HTTP where plain HTTP is allowed. */
  base(registry: string, signal?: AbortSignal): Promise<string> {
    const host = hostOf(registry);
    let p = this.bases.get(host);
    if (!p) {
      p = this.probe(host, signal);
      this.bases.set(host, p);
      p.catch(() => this.bases.delete(host));
    }
    return p;
  }

  private async probe(host: string, signal?: AbortSignal): Promise<string> {
    if (!this.mayUseHttp(host)) return `https://${host}`;
    // A loopback registry that answers /v2/ in plain HTTP as a registry (its API version
    // header) is used over HTTP without building a TLS context first: that context, with
    // every system CA, cost 100-300 ms of each CLI run. Anything else is probed as Docker
    // does, HTTPS first. The plain probe carries no credentials.
    if (isLoopbackHost(host) && (await this.speaksPlainRegistry(host, signal))) return `http://${host}`;
    try {
      const url = new URL(`https://${host}/v2/`);
      const res = await send(url, await this.dispatcher(url), { method: "GET", headers: { "user-agent": this.userAgent }, signal, timeoutMs: Math.min(30_000, this.timeoutMs) });
      await res.body.dump();
      return `https://${host}`;
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      // The server speaks TLS but its certificate is not trusted: stay on HTTPS and let
      // the real request report it (a plain-HTTP retry would only confuse).
      if (isCertificateError(e)) return `https://${host}`;
      // Nothing listening (yet): use HTTP now, but probe again next time.
      if (reasonOf(e) === "ECONNREFUSED") queueMicrotask(() => this.bases.delete(host));
      return `http://${host}`;
    }
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    const { registry, signal } = req;
    const base = await this.base(registry, signal);
    const baseUrl = new URL(base);
    let url = new URL(req.path, base);
    let scopes = req.scopes ?? [];
    const retry = req.retry !== false;
    const follow = req.followRedirects ?? (req.method === "GET" || req.method === "HEAD");
    let attempt = 1;
    let authRetried = false;
    let redirects = 0;
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      const sameHost = url.host === baseUrl.host;
      const headers: Record<string, string> = { "user-agent": this.userAgent, ...req.headers };
      let res: HttpResult;
      try {
        if (sameHost && this.auth.knowsChallenge(registry)) {
          const a = await this.auth.authorize(registry, scopes, signal);
          if (a) headers.authorization = a;
        }
        const body = req.body ? await req.body() : undefined;
        res = await send(url, await this.dispatcher(url), { method: req.method, headers, body, signal, timeoutMs: this.timeoutMs });
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        if (retry && attempt < this.attempts && isRetryableNetworkError(e)) {
          const delayMs = this.backoff(attempt);
          this.retrying({ registry, what: req.what, attempt, delayMs, reason: reasonOf(e) });
          attempt++;
          await sleep(delayMs, signal);
          continue;
        }
        throw networkError(registry, req.what, e);
      }
      const status = res.statusCode;
      if (status === 401 && sameHost && !authRetried) {
        authRetried = true;
        const www = res.headers["www-authenticate"];
        await res.body.dump().catch(() => {});
        if (this.auth.learn(registry, www)) {
          this.auth.invalidate(registry, scopes);
          // The registry may name the scope it wants (insufficient_scope): ask for that too.
          scopes = mergeScopes(scopes, scopesFromChallenge(parseChallenges(www)[0]?.params.scope));
          continue;
        }
        throw httpError(registry, req.what, status, "");
      }
      if (status === 401 && sameHost) {
        const text = await readErrorBody(res.body);
        const cred = await this.auth.credentials.get(registry, signal, scopes[0]?.repository).catch(() => undefined);
        const err = httpError(registry, req.what, status, text);
        throw new OcibuildError(
          "REGISTRY_UNAUTHORIZED",
          cred ? `authentication to ${registry} failed: the credentials from ${cred.source} were refused (${req.what})` : err.message,
          { details: err.details, hint: err.hint },
        );
      }
      if (retry && isRetryableStatus(status) && attempt < this.attempts) {
        const after = parseRetryAfter(firstHeader(res.headers["retry-after"]));
        await res.body.dump().catch(() => {});
        const delay = after !== undefined ? Math.min(after, 60_000) : this.backoff(attempt);
        this.retrying({ registry, what: req.what, attempt, delayMs: delay, reason: `HTTP ${status}`, status });
        attempt++;
        await sleep(delay, signal);
        continue;
      }
      if (follow && status >= 300 && status < 400 && status !== 304 && res.headers.location !== undefined) {
        await res.body.dump().catch(() => {});
        if (++redirects > 10) throw new OcibuildError("REGISTRY_REDIRECT_LOOP", `${req.what}: too many redirects from ${registry}`, { details: { registry } });
        url = new URL(firstHeader(res.headers.location)!, url);
        continue;
      }
      const ok = req.ok ? req.ok.includes(status) : status >= 200 && status < 300;
      if (!ok) {
        const text = req.method === "HEAD" ? "" : await readErrorBody(res.body);
        if (req.method === "HEAD") await res.body.dump().catch(() => {});
        throw httpError(registry, req.what, status, text);
      }
      const h = res.headers;
      return { status, url, headers: h, body: res.body, header: (name: string) => firstHeader(h[name.toLowerCase()]) };
    }
  }

  /** A token endpoint request, with the realm host's TLS settings and retries on transient failures. */
  private async sendToken(url: URL, init: Parameters<TokenSender>[1]): Promise<{ status: number; text: string }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await send(url, await this.dispatcher(url), {
          method: init.method,
          headers: { "user-agent": this.userAgent, ...init.headers },
          body: init.body,
          signal: init.signal,
          timeoutMs: this.timeoutMs,
        });
        if (isRetryableStatus(res.statusCode) && attempt < this.attempts) {
          const after = parseRetryAfter(firstHeader(res.headers["retry-after"]));
          await res.body.dump().catch(() => {});
          await sleep(after !== undefined ? Math.min(after, 60_000) : this.backoff(attempt), init.signal);
          continue;
        }
        return { status: res.statusCode, text: await res.body.text(MAX_TOKEN_RESPONSE_BYTES) };
      } catch (e) {
        if (init.signal?.aborted) throw abortError(init.signal);
        if (attempt < this.attempts && isRetryableNetworkError(e)) {
          await sleep(this.backoff(attempt), init.signal);
          continue;
        }
        throw networkError(url.host, `getting a token from ${url.origin}`, e);
      }
    }
  }

  async close(): Promise<void> {
    for (const a of this.agents.values()) a.close();
    this.agents.clear();
  }
}
