/**
 * The scheme layer: which base URL (https:// or http://) a registry is spoken to
 * at. HTTPS unless plain HTTP is allowed for the host (loopback, insecure
 * registries, http:// mirrors; hosts.ts), and then as Docker does: HTTPS first,
 * plain HTTP when HTTPS is not answered. Decided once per host and remembered.
 */
import { isCertificateError } from "./errors.js";
import { isLoopbackHost, hostOf, mayUseHttp } from "./hosts.js";
import { abortError, reasonOf } from "./retry.js";
import type { RegistryOptions } from "./types.js";
import type { Wire } from "./wire.js";

export class SchemeChooser {
  private readonly bases = new Map<string, Promise<string>>();

  constructor(
    private readonly opts: RegistryOptions,
    private readonly wire: Wire,
  ) {}

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

  /** Does a registry answer /v2/ over plain HTTP (its API version header, 200 or 401)? */
  private async speaksPlainRegistry(host: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const res = await this.wire.send(new URL(`http://${host}/v2/`), { method: "GET", signal, timeoutMs: Math.min(10_000, this.wire.timeoutMs) });
      await res.body.dump();
      return res.headers["docker-distribution-api-version"] !== undefined && (res.statusCode === 200 || res.statusCode === 401);
    } catch {
      if (signal?.aborted) throw abortError(signal);
      return false;
    }
  }

  private async probe(host: string, signal?: AbortSignal): Promise<string> {
    if (!mayUseHttp(this.opts, host)) return `https://${host}`;
    // A loopback registry that answers /v2/ in plain HTTP as a registry (its API version
    // header) is used over HTTP without building a TLS context first: that context, with
    // every system CA, cost 100-300 ms of each CLI run. Anything else is probed as Docker
    // does, HTTPS first. The plain probe carries no credentials.
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
