/**
 * A small token server for Distribution's `auth: token`, run in-process on a
 * free loopback port. It signs RS256 JWTs with a key whose self-signed
 * certificate the registry trusts (rootcertbundle), carrying the certificate
 * in the `x5c` header, with the claims registry 2.8 checks: iss, aud (the
 * service), exp/nbf, and the `access` list.
 */
import { createSign, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface TokenRequestLog {
  method: string;
  account?: string;
  /** Basic user, "refresh:<token>" for a refresh grant, or undefined for anonymous. */
  user?: string;
  scopes: string[];
  service?: string;
}

export interface TokenServerOptions {
  certPath: string;
  keyPath: string;
  issuer: string;
  service: string;
  users: Record<string, string>;
  /** Refresh (identity) tokens and the user they stand for. */
  refreshTokens?: Record<string, string>;
  /** Repositories anonymous users may pull. */
  anonymousPull?: string[];
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
}

export interface TokenServer {
  url: string;
  realm: string;
  requests: TokenRequestLog[];
  /** The `auth:` YAML for the registry. */
  registryConfig(): string;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = "";
    req.on("data", (d: Buffer) => (s += d.toString("utf8")));
    req.on("end", () => resolve(s));
    req.on("error", reject);
  });
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const certPem = await readFile(opts.certPath, "utf8");
  const keyPem = await readFile(opts.keyPath, "utf8");
  const der = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  const requests: TokenRequestLog[] = [];

  const sign = (subject: string, access: { type: string; name: string; actions: string[] }[]) => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "RS256", x5c: [der] };
    const claims = { iss: opts.issuer, sub: subject, aud: opts.service, exp: now + (opts.expiresIn ?? 300), nbf: now - 10, iat: now, jti: randomBytes(8).toString("hex"), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign("RSA-SHA256").update(input).sign(keyPem);
    return `${input}.${b64url(sig)}`;
  };

  const grant = (user: string | undefined, scopes: string[]) =>
    scopes
      .map((s) => /^repository:([^:]+):(.*)$/.exec(s))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => {
        const name = m[1]!;
        const wanted = m[2]!.split(",");
        const allowed = user !== undefined ? wanted : (opts.anonymousPull ?? []).includes(name) ? wanted.filter((a) => a === "pull") : [];
        return { type: "repository", name, actions: allowed };
      });

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    let user: string | undefined;
    let scopes: string[] = [];
    let service: string | undefined;
    const account = url.searchParams.get("account") ?? undefined;
    if (req.method === "POST") {
      const form = new URLSearchParams(await readBody(req));
      scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
      service = form.get("service") ?? undefined;
      if (form.get("grant_type") === "refresh_token") {
        const rt = form.get("refresh_token") ?? "";
        const u = opts.refreshTokens?.[rt];
        requests.push({ method: "POST", user: `refresh:${rt}`, scopes, service });
        if (u === undefined) {
          res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "invalid refresh token" }] }));
          return;
        }
        user = u;
      } else {
        res.writeHead(400).end();
        return;
      }
    } else {
      scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter(Boolean);
      service = url.searchParams.get("service") ?? undefined;
      const h = req.headers.authorization;
      if (h?.startsWith("Basic ")) {
        const decoded = Buffer.from(h.slice(6), "base64").toString("utf8");
        const colon = decoded.indexOf(":");
        const u = decoded.slice(0, colon);
        const p = decoded.slice(colon + 1);
        requests.push({ method: "GET", account, user: u, scopes, service });
        if (opts.users[u] !== p) {
          res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ details: "incorrect username or password" }));
          return;
        }
        user = u;
      } else {
        requests.push({ method: "GET", account, scopes, service });
      }
    }
    const token = sign(user ?? "", grant(user, scopes));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ token, access_token: token, expires_in: opts.expiresIn ?? 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    realm: `${url}/token`,
    requests,
    registryConfig: () =>
      `auth:\n  token:\n    realm: ${url}/token\n    service: ${opts.service}\n    issuer: ${opts.issuer}\n    rootcertbundle: ${opts.certPath}\n`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
