/**
 * The scheme layer: which base URL (https:// or http://) a registry is spoken to
 * at. HTTPS unless plain HTTP is allowed for the host (loopback, insecure
 * registries, http:// mirrors; hosts.ts), and then as Docker does: HTTPS first,
 * plain HTTP when HTTPS is not answered; on loopback, plain HTTP first when the
 * host answers /v2/ as a registry there. Decided once per host and remembered.
 *
 * No probe comes before a host's first requests: they go out at once with the
 * scheme the probe would try first, as a guess, and the host's first answer is
 * checked (`confirming`). Over plain HTTP, an answer from a registry (its API
 * version header, which Distribution sends on every /v2/ answer) confirms the guess;
 * over HTTPS, any answer does (TLS worked). Otherwise the probe decides, as it did
 * before every first request: when it picks the guessed scheme, a failure is the
 * request's own (retried as any other), else the request is sent again at the base
 * it picked. A loopback or insecure registry is thereby one round trip nearer: a
 * fully cached rebuild's push, for one, is a single request.
 */
import { isCertificateError } from "./errors.js";
import type { Send } from "./exchange.js";
import { isLoopbackHost, hostOf, mayUseHttp } from "./hosts.js";
import { abortError, reasonOf } from "./retry.js";
import type { RegistryOptions } from "./types.js";
import type { Wire } from "./wire.js";

/**
 * A guessed scheme was wrong: the request is to be sent again at the base the probe
 * picked. Never seen by a caller, and never retried (it has no `cause` for the retry
 * policy to read).
 */
export class SchemeRefuted extends Error {
  constructor() {
    super("the guessed scheme was wrong");
  }
}

/** The registry API's version header: Distribution sends it on every /v2/ answer. */
const API_VERSION = "docker-distribution-api-version";

export class SchemeChooser {
  private readonly bases = new Map<string, Promise<string>>();

  constructor(
    private readonly opts: RegistryOptions,
    private readonly wire: Wire,
  ) {}

  /**
   * The base URL (scheme://host) to send a request to `registry` to, and whether it is
   * a guess (the host's scheme is not known yet; `confirming` checks the answer).
   */
  async origin(registry: string): Promise<{ base: string; guess: boolean }> {
    const host = hostOf(registry);
    const known = this.bases.get(host);
    if (known) return { base: await known, guess: false };
    if (!mayUseHttp(this.opts, host)) return { base: `https://${host}`, guess: false };
    return { base: `${isLoopbackHost(host) ? "http" : "https"}://${host}`, guess: true };
  }

  /** A host answered as a registry over the guessed scheme of `base`. */
  confirm(registry: string, base: string): void {
    const host = hostOf(registry);
    if (!this.bases.has(host)) this.bases.set(host, Promise.resolve(base));
  }

  /** The base URL for a registry as the probe finds it, probing once per host (a failed probe is made again by the next request). */
  decide(registry: string, signal?: AbortSignal): Promise<string> {
    const host = hostOf(registry);
    let p = this.bases.get(host);
    if (!p) {
      p = this.probe(host, signal);
      this.bases.set(host, p);
      p.catch(() => this.bases.delete(host));
    }
    return p;
  }

  /** Does a registry answer /v2/ over plain HTTP (its API version header, 200 or 401)? */
  private async speaksPlainRegistry(host: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const res = await this.wire.send(new URL(`http://${host}/v2/`), { method: "GET", signal, timeoutMs: Math.min(10_000, this.wire.timeoutMs) });
      await res.body.dump();
      return res.headers[API_VERSION] !== undefined && (res.statusCode === 200 || res.statusCode === 401);
    } catch {
      if (signal?.aborted) throw abortError(signal);
      return false;
    }
  }

  private async probe(host: string, signal?: AbortSignal): Promise<string> {
    if (!mayUseHttp(this.opts, host)) return `https://${host}`;
    // A loopback registry that answers /v2/ in plain HTTP as a registry is used over HTTP
    // without building a TLS context first. Anything else is probed as Docker does, HTTPS
    // first. The plain probe carries no credentials.
    if (isLoopbackHost(host) && (await this.speaksPlainRegistry(host, signal))) return `http://${host}`;
    try {
      const res = await this.wire.send(new URL(`https://${host}/v2/`), { method: "GET", signal, timeoutMs: Math.min(30_000, this.wire.timeoutMs) });
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
}

/**
 * The layer over the wire that checks a guessed scheme (SchemeChooser.origin) on the
 * host's first answer or failure, then lets every later send of the exchange through.
 * An answer that does not settle it (no API version header: a proxy's 503, a TLS
 * server's 400) is held while the probe decides: the request's own when the probe
 * picks the guessed scheme, dropped and sent again at the other one when not.
 */
export function confirming(chooser: SchemeChooser, next: Send): Send {
  return async (ex, hop) => {
    const { guess, origin, req } = ex;
    if (!guess || guess.confirmed || hop.url.host !== origin.host) return next(ex, hop);
    let res;
    try {
      res = await next(ex, hop);
    } catch (e) {
      if (req.signal?.aborted) throw e;
      // TLS worked as far as the certificate: HTTPS it is, and the error is the request's.
      const right = hop.url.protocol === "https:" && isCertificateError(e) ? origin.origin : await chooser.decide(req.registry, req.signal);
      if (right !== origin.origin) throw new SchemeRefuted();
      chooser.confirm(req.registry, right);
      guess.confirmed = true;
      throw e;
    }
    if (hop.url.protocol === "http:" && res.headers[API_VERSION] === undefined) {
      const right = await chooser.decide(req.registry, req.signal).catch(() => undefined);
      if (right !== origin.origin) {
        await res.body.dump().catch(() => {});
        if (req.signal?.aborted) throw abortError(req.signal);
        throw new SchemeRefuted();
      }
    }
    guess.confirmed = true;
    chooser.confirm(req.registry, origin.origin);
    return res;
  };
}
