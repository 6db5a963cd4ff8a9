/**
 * The innermost layer of the transport: one HTTP exchange with a URL, over the
 * keep-alive pools of its host (plain or TLS by the URL's scheme, the host's TLS
 * settings from tls.ts), with our User-Agent and the stall timeout. No retries,
 * no auth, no redirects: the layers around it (transport.ts) add those.
 */
import type { Agent } from "node:http";
import { VERSION } from "../../version.js";
import { skipsVerify } from "./hosts.js";
import { HostAgents, send, type HttpResult, type SendOptions } from "./http.js";
import type { TlsTrust } from "./tls.js";
import type { RegistryOptions } from "./types.js";

export class Wire {
  private readonly agents = new Map<string, HostAgents>();
  /**
   * CAs, client certificates and verification per host (tls.ts), made at the first HTTPS
   * request: tls.ts loads node:tls, which a build against a plain-HTTP registry never needs.
   */
  private tls?: Promise<TlsTrust>;
  private readonly userAgent: string;

  constructor(
    private readonly opts: RegistryOptions,
    /** A request stalled this long fails with REGISTRY_TIMEOUT. */
    readonly timeoutMs: number,
  ) {
    this.userAgent = opts.userAgent ?? `ocibuild/${VERSION}`;
  }

  private async tlsOptions(host: string): ReturnType<TlsTrust["options"]> {
    this.tls ??= import("./tls.js").then(({ TlsTrust }) => new TlsTrust(this.opts, (h) => skipsVerify(this.opts, h)));
    return (await this.tls).options(host);
  }

  /** The connection pools for a URL's host (plain or TLS by its scheme). */
  private dispatcher(url: URL): Promise<Agent> {
    let a = this.agents.get(url.host);
    if (!a) {
      const host = url.host;
      a = new HostAgents(() => this.tlsOptions(host));
      this.agents.set(host, a);
    }
    return a.forUrl(url);
  }

  /** One request (the transport's stall timeout unless `r` gives one); resolves when the response head has arrived. */
  async send(url: URL, r: SendOptions): Promise<HttpResult> {
    return send(url, await this.dispatcher(url), {
      method: r.method,
      headers: { "user-agent": this.userAgent, ...r.headers },
      body: r.body,
      signal: r.signal,
      timeoutMs: r.timeoutMs ?? this.timeoutMs,
    });
  }

  close(): void {
    for (const a of this.agents.values()) a.close();
    this.agents.clear();
  }
}
