/**
 * ADD's download request, on node:http and node:https rather than fetch: redirects
 * followed (at most 10, as Go's HTTP client that BuildKit uses), a stalled connection
 * failed (http.ts's watch), and TLS trusting what a registry host trusts by default
 * (tls.ts: Node's CAs, the system bundle, NODE_EXTRA_CA_CERTS). fetch trusts only the
 * CAs Node loaded at start-up, and bin/ocibuild starts Node without NODE_EXTRA_CA_CERTS
 * (parsing it costs ~37 ms of every run), so an ADD from a host signed by a CA given
 * there must not go through fetch.
 */
import http from "node:http";
import type { Agent as HttpsAgent } from "node:https";
import { OcibuildError } from "../../errors.js";
import { type HttpResult, send } from "../../oci/registry/http.js";
import { commonTrust } from "../../oci/registry/tls.js";
import { VERSION } from "../../version.js";

const MAX_REDIRECTS = 10;
const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

export interface UrlGetOptions {
  /** The environment NODE_EXTRA_CA_CERTS is read from. */
  env?: Record<string, string | undefined>;
  signal?: AbortSignal;
}

/** GET `url`, following redirects; resolves with the final answer's head (its body is the caller's to read). */
export async function urlGet(url: string, opts: UrlGetOptions = {}): Promise<HttpResult> {
  let target = new URL(url);
  let tls: HttpsAgent | undefined;
  for (let hop = 0; ; hop++) {
    if (target.protocol !== "http:" && target.protocol !== "https:") {
      throw new OcibuildError("BUILD_ADD_DOWNLOAD_FAILED", `ADD cannot download ${url}: it redirects to ${target.protocol} (${target.href}), which is not HTTP`);
    }
    let agent: http.Agent;
    if (target.protocol === "https:") {
      if (!tls) {
        const { Agent } = await import("node:https");
        tls = new Agent({ secureContext: (await commonTrust(opts.env)).context });
      }
      agent = tls;
    } else agent = new http.Agent();
    const res = await send(target, agent, { method: "GET", headers: { "user-agent": `ocibuild/${VERSION}` }, signal: opts.signal });
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode) || typeof location !== "string") return res;
    await res.body.dump();
    if (hop === MAX_REDIRECTS) throw new OcibuildError("BUILD_ADD_DOWNLOAD_FAILED", `ADD cannot download ${url}: more than ${MAX_REDIRECTS} redirects`);
    target = new URL(location, target);
  }
}
