/**
 * The shapes passed between the transport's layers (transport.ts): the request a
 * caller makes, the response it gets back, and, inside, the exchange (one logical
 * request's state) that each layer hands to the next with the hop to send.
 */
import type { Readable } from "node:stream";
import type { HttpResult, ResponseBody } from "./http.js";
import type { Scope } from "./types.js";

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

/** One logical request on its way through the layers. */
export interface Exchange {
  readonly req: HttpRequest;
  /** The registry's base URL (scheme://host), chosen by the scheme layer. */
  readonly origin: URL;
  /** The scopes to ask a token for; grow when a challenge names more (insufficient_scope). */
  scopes: Scope[];
  /** A 401 is answered with fresh credentials once per request. */
  authRetried: boolean;
  /** Set when `origin`'s scheme is a guess (scheme.ts): confirmed by the host's first answer, or refuted. */
  readonly guess?: { confirmed: boolean };
}

/** Where one send goes, and the Authorization the auth layer adds (only to the registry's own host). */
export interface Hop {
  url: URL;
  authorization?: string;
}

/** A response as the layers hand it back: the raw result and the URL that answered. */
export interface Reply extends HttpResult {
  url: URL;
}

/** A layer, or the wire under them all. */
export type Send = (ex: Exchange, hop: Hop) => Promise<Reply>;

export function firstHeader(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}
