/**
 * The redirect layer: a 3xx with a Location is followed (by default for GET and
 * HEAD; a blob's redirect to a CDN or object store, say), at most ten hops. The
 * layer under it (auth) sends no credentials to a host other than the registry's.
 */
import { OcibuildError } from "../../errors.js";
import { firstHeader, type Send } from "./exchange.js";

const MAX_REDIRECTS = 10;

export function redirecting(next: Send): Send {
  return async (ex, hop) => {
    const { req } = ex;
    const follow = req.followRedirects ?? (req.method === "GET" || req.method === "HEAD");
    let url = hop.url;
    for (let hops = 0; ; ) {
      const res = await next(ex, { url });
      const location = firstHeader(res.headers.location);
      const status = res.statusCode;
      if (!follow || status < 300 || status >= 400 || status === 304 || location === undefined) return res;
      await res.body.dump().catch(() => {});
      if (++hops > MAX_REDIRECTS) {
        throw new OcibuildError("REGISTRY_REDIRECT_LOOP", `${req.what}: too many redirects from ${req.registry}`, { details: { registry: req.registry } });
      }
      url = new URL(location, url);
    }
  };
}
