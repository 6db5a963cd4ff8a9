/**
 * HTTP to registries, as layers around one send:
 *
 *   scheme (scheme.ts: https, or http where allowed, per host; a first request's scheme
 *           is a guess, which `confirming`, over the wire, checks against the answer)
 *   -> retry (retry.ts: the one policy: retryable failures, backoff, Retry-After, onRetry)
 *   -> redirects (redirects.ts: 3xx followed, to other hosts too)
 *   -> auth (auth-layer.ts: Authorization for the registry's own host, 401 challenges)
 *   -> wire (wire.ts: keep-alive pools and TLS per host, User-Agent, stall timeout)
 *
 * A retry starts the request again from the registry (a redirect's target may have
 * expired); a 401 is answered once per request; what is left after the layers is
 * checked against the statuses the caller accepts.
 */
import { Authenticator } from "../auth/authenticator.js";
import { CredentialStore } from "../auth/config.js";
import { authenticating, tokenSender } from "./auth-layer.js";
import { httpError, networkError, readErrorBody } from "./errors.js";
import { type Exchange, firstHeader, type HttpRequest, type HttpResponse, type Reply, type Send } from "./exchange.js";
import { hostOf, isLoopbackHost } from "./hosts.js";
import { redirecting } from "./redirects.js";
import { abortError, RetryPolicy, statusCause } from "./retry.js";
import { confirming, SchemeChooser, SchemeRefuted } from "./scheme.js";
import type { RegistryOptions } from "./types.js";
import { Wire } from "./wire.js";

export type { HttpRequest, HttpResponse, Method } from "./exchange.js";
export { hostOf, isLoopbackHost };

/** The retry layer: the whole request again (from the registry) after a retryable failure, unless it says retry: false. */
function retrying(policy: RetryPolicy, next: Send): Send {
  return (ex, hop) => {
    const { req } = ex;
    if (req.retry === false) return next(ex, hop);
    return policy.run({ registry: req.registry, what: req.what, signal: req.signal, retryResult: statusCause }, () => next(ex, hop));
  };
}

/** The innermost send: the request's headers and a fresh body, on the wire. */
function onWire(wire: Wire): Send {
  return async (ex, hop) => {
    const { req } = ex;
    if (req.signal?.aborted) throw abortError(req.signal);
    const headers = hop.authorization ? { ...req.headers, authorization: hop.authorization } : req.headers;
    const body = req.body ? await req.body() : undefined;
    const res = await wire.send(hop.url, { method: req.method, headers, body, signal: req.signal });
    return { ...res, url: hop.url };
  };
}

/** A status the caller did not ask for becomes the registry's error; else the response is the caller's. */
async function accept(req: HttpRequest, res: Reply): Promise<HttpResponse> {
  const status = res.statusCode;
  const ok = req.ok ? req.ok.includes(status) : status >= 200 && status < 300;
  if (!ok) {
    const text = req.method === "HEAD" ? "" : await readErrorBody(res.body);
    if (req.method === "HEAD") await res.body.dump().catch(() => {});
    throw httpError(req.registry, req.what, status, text);
  }
  const h = res.headers;
  return { status, url: res.url, headers: h, body: res.body, header: (name: string) => firstHeader(h[name.toLowerCase()]) };
}

export class Transport {
  readonly auth: Authenticator;
  /** The one retry policy, for this transport's requests and for the loops above it (uploads, downloads). */
  readonly retry: RetryPolicy;
  private readonly wire: Wire;
  private readonly scheme: SchemeChooser;
  private readonly send: Send;

  constructor(opts: RegistryOptions = {}) {
    this.retry = new RetryPolicy(opts);
    this.wire = new Wire(opts, this.retry.timeoutMs);
    this.scheme = new SchemeChooser(opts, this.wire);
    const credentials = new CredentialStore({ authConfigPath: opts.authConfigPath, env: opts.env ?? {} });
    this.auth = new Authenticator(credentials, tokenSender(this.wire, this.retry));
    this.send = retrying(this.retry, redirecting(authenticating(this.auth, confirming(this.scheme, onWire(this.wire)))));
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    let { base, guess } = await this.scheme.origin(req.registry);
    for (;;) {
      const origin = new URL(base);
      const ex: Exchange = { req, origin, scopes: req.scopes ?? [], authRetried: false, guess: guess ? { confirmed: false } : undefined };
      let res: Reply;
      try {
        res = await this.send(ex, { url: new URL(req.path, origin) });
      } catch (e) {
        if (req.signal?.aborted) throw abortError(req.signal);
        if (!(e instanceof SchemeRefuted)) throw networkError(req.registry, req.what, e);
        // The guessed scheme was wrong: the request again, at the base the probe picked.
        base = await this.scheme.decide(req.registry, req.signal);
        guess = false;
        continue;
      }
      return accept(req, res);
    }
  }

  async close(): Promise<void> {
    this.wire.close();
  }
}
