/**
 * The WWW-Authenticate challenge flow. Basic: send the stored user/password.
 * Bearer: get a token from the realm with `service` and `scope` (anonymous, with
 * Basic credentials, or by POSTing a refresh/identity token), cache it per
 * (registry, scopes) until it expires. Secrets never enter error messages.
 */
import { OcibuildError, optionWords } from "../../errors.js";
import type { Scope } from "../registry/types.js";
import { type Challenge, parseChallenges } from "./challenge.js";
import { type Credential, CredentialStore } from "./config.js";

export interface TokenHttpResponse {
  status: number;
  text: string;
}
/** Sends one request to a token endpoint (the transport supplies TLS settings and retries); `registry` is the one the token is for. */
export type TokenSender = (
  url: URL,
  init: { registry: string; method: "GET" | "POST"; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<TokenHttpResponse>;

interface CachedToken {
  header: string;
  expiresAt: number;
}

export function scopeStrings(scopes: Scope[]): string[] {
  const merged = new Map<string, Set<string>>();
  for (const s of scopes) {
    const set = merged.get(s.repository) ?? new Set<string>();
    for (const a of s.actions) set.add(a);
    merged.set(s.repository, set);
  }
  return [...merged.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([repo, actions]) => `repository:${repo}:${[...actions].sort().join(",")}`);
}

export class Authenticator {
  /** The challenge each registry answered with (learned from /v2/ or any 401). */
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();

  constructor(
    readonly credentials: CredentialStore,
    private readonly send: TokenSender,
    private readonly now: () => number = Date.now,
  ) {}

  /** Remember a registry's challenge (from a 401's WWW-Authenticate). Returns false if none is usable. */
  learn(registry: string, header: string | string[] | undefined): boolean {
    const c = parseChallenges(header)[0];
    if (!c) return false;
    this.challenges.set(registry, c);
    return true;
  }

  knowsChallenge(registry: string): boolean {
    return this.challenges.has(registry);
  }

  private key(registry: string, scopes: Scope[]): string {
    return `${registry} ${scopeStrings(scopes).join(" ")}`;
  }

  /** The Authorization header to send, if one is known and still valid (no network). */
  cached(registry: string, scopes: Scope[]): string | undefined {
    const t = this.tokens.get(this.key(registry, scopes));
    if (t && t.expiresAt > this.now()) return t.header;
    return undefined;
  }

  /** Forget a token the registry refused. */
  invalidate(registry: string, scopes: Scope[]): void {
    this.tokens.delete(this.key(registry, scopes));
  }

  /**
   * Obtain an Authorization header for `scopes` on `registry` following its challenge.
   * Returns undefined when the registry asked for nothing we can answer anonymously
   * (then the caller reports the 401).
   */
  async authorize(registry: string, scopes: Scope[], signal?: AbortSignal): Promise<string | undefined> {
    const challenge = this.challenges.get(registry);
    if (!challenge) return undefined;
    const key = this.key(registry, scopes);
    const hit = this.cached(registry, scopes);
    if (hit) return hit;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetch(registry, challenge, scopes, signal);
      this.pending.set(key, p);
    }
    try {
      const t = await p;
      this.tokens.set(key, t);
      return t.header;
    } finally {
      this.pending.delete(key);
    }
  }

  private async fetch(registry: string, challenge: Challenge, scopes: Scope[], signal?: AbortSignal): Promise<CachedToken> {
    // The repository asked for first (the target of a push) picks podman's repository-specific entries.
    const cred = await this.credentials.get(registry, signal, scopes[0]?.repository);
    if (challenge.scheme === "basic") {
      if (!cred || cred.username === undefined || cred.password === undefined) {
        throw new OcibuildError("REGISTRY_UNAUTHORIZED", `registry ${registry} requires a user name and password (Basic auth) and none is configured`, {
          hint: `log in first (docker login ${registry}) or point ${optionWords("registry.authConfigPath")} or DOCKER_CONFIG at a config.json with credentials for ${registry}`,
          details: { registry },
        });
      }
      const header = `Basic ${Buffer.from(`${cred.username}:${cred.password}`, "utf8").toString("base64")}`;
      return { header, expiresAt: Number.POSITIVE_INFINITY };
    }
    if (cred?.registryToken) return { header: `Bearer ${cred.registryToken}`, expiresAt: Number.POSITIVE_INFINITY };
    return this.bearer(registry, challenge, scopes, cred, signal);
  }

  private async bearer(registry: string, challenge: Challenge, scopes: Scope[], cred: Credential | undefined, signal?: AbortSignal): Promise<CachedToken> {
    const realm = challenge.params.realm;
    let url: URL;
    try {
      url = new URL(realm ?? "");
    } catch {
      throw new OcibuildError("REGISTRY_AUTH_CHALLENGE_INVALID", `registry ${registry} sent a Bearer challenge without a valid realm URL`, { details: { registry } });
    }
    const service = challenge.params.service;
    const scopeList = scopeStrings(scopes);
    const started = this.now();
    let res: TokenHttpResponse;
    if (cred?.identityToken) {
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: cred.identityToken, client_id: "ocibuild" });
      if (service) form.set("service", service);
      if (scopeList.length) form.set("scope", scopeList.join(" "));
      res = await this.send(url, {
        registry,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        signal,
      });
    } else {
      if (service) url.searchParams.set("service", service);
      for (const s of scopeList) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (cred?.username !== undefined && cred.password !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`${cred.username}:${cred.password}`, "utf8").toString("base64")}`;
        url.searchParams.set("account", cred.username);
      }
      res = await this.send(url, { registry, method: "GET", headers, signal });
    }
    if (res.status === 401 || res.status === 403) {
      throw new OcibuildError(
        "REGISTRY_UNAUTHORIZED",
        cred
          ? `authentication to ${registry} failed: its token service (${url.origin}) refused the credentials from ${cred.source} (HTTP ${res.status})`
          : `registry ${registry} requires authentication and no credentials are configured for it (token service answered HTTP ${res.status})`,
        {
          hint: `check the credentials for ${registry} (docker login ${registry})`,
          details: { registry, status: res.status, tokenService: url.origin },
        },
      );
    }
    if (res.status < 200 || res.status >= 300) {
      throw new OcibuildError("REGISTRY_TOKEN_FAILED", `getting a token for ${registry} from ${url.origin} failed with HTTP ${res.status}`, {
        retryable: res.status === 429 || res.status >= 500,
        details: { registry, status: res.status, tokenService: url.origin },
      });
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(res.text) as typeof body;
    } catch {
      throw new OcibuildError("REGISTRY_TOKEN_FAILED", `the token service of ${registry} (${url.origin}) did not answer with JSON`, { details: { registry } });
    }
    const token = typeof body.token === "string" && body.token ? body.token : typeof body.access_token === "string" ? body.access_token : "";
    if (!token) throw new OcibuildError("REGISTRY_TOKEN_FAILED", `the token service of ${registry} (${url.origin}) returned no token`, { details: { registry } });
    // Docker's default lifetime is 60 s when expires_in is missing; refresh 10% (>= 5 s) early.
    const lifetime = (typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60) * 1000;
    return { header: `Bearer ${token}`, expiresAt: started + lifetime - Math.max(5000, lifetime / 10) };
  }
}
