/**
 * Each layer of the transport against real HTTP servers in this process (node:http
 * on loopback ports), for the answers a real registry will not give on demand:
 * 503 and 429 with Retry-After, a dropped connection, a stalled answer, redirects
 * to another host, Basic and Bearer challenges, a token service that fails.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OcibuildError } from "../../../src/errors.js";
import { parseDigest } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { mayUseHttp } from "../../../src/oci/registry/hosts.js";
import { RegistryClient, type RegistryOptions, type RetryEvent } from "../../../src/oci/registry/index.js";
import { type HttpRequest, Transport } from "../../../src/oci/registry/transport.js";
import { haveOpenssl, makeCA } from "../../helpers/registry-tls.js";

interface Seen {
  method: string;
  url: string;
  authorization?: string;
}

interface TestServer {
  host: string;
  seen: Seen[];
  /** Connections that did not speak HTTP (a TLS handshake, say). */
  clientErrors: number;
  stop(): Promise<void>;
}

/**
 * A server on `address` answering as a registry does (unless `registry` is false): /v2/
 * with 200, and its API version header on every answer (as Distribution sends it);
 * everything else with `handle`.
 */
async function serve(handle: (req: IncomingMessage, res: ServerResponse, n: number) => void, o: { address?: string; registry?: boolean } = {}): Promise<TestServer> {
  const seen: Seen[] = [];
  const t: TestServer = { host: "", seen, clientErrors: 0, stop: async () => {} };
  const server = createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, authorization: req.headers.authorization });
    if (o.registry !== false) res.setHeader("docker-distribution-api-version", "registry/2.0");
    if (req.url === "/v2/" && o.registry !== false) {
      res.writeHead(200).end("{}");
      return;
    }
    handle(req, res, seen.filter((s) => s.url === req.url).length);
  });
  server.on("clientError", (_e, socket) => {
    t.clientErrors++;
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, o.address ?? "127.0.0.1", r));
  t.host = `${o.address ?? "127.0.0.1"}:${(server.address() as AddressInfo).port}`;
  t.stop = () => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  };
  return t;
}

const BLOB = "/v2/app/blobs/sha256:0000";

async function get(opts: RegistryOptions, host: string, path = BLOB, extra: Partial<HttpRequest> = {}): Promise<{ status: number; text: string }> {
  const t = new Transport(opts);
  try {
    const res = await t.request({ method: "GET", registry: host, path, what: `get ${path}`, scopes: [{ repository: "app", actions: ["pull"] }], ...extra });
    return { status: res.status, text: await res.body.text(1024) };
  } finally {
    await t.close();
  }
}

describe("the retry layer", () => {
  const events: RetryEvent[] = [];
  const opts = (attempts = 4): RegistryOptions => ({ retry: { attempts, baseDelayMs: 10, maxDelayMs: 20 }, onRetry: (e) => events.push(e) });

  it("retries 503 and 429 after their Retry-After (seconds, an HTTP date), reporting each retry", async () => {
    events.length = 0;
    const s = await serve((_req, res, n) => {
      if (n === 1) res.writeHead(503, { "retry-after": "0" }).end();
      else if (n === 2) res.writeHead(429, { "retry-after": new Date(Date.now() - 5000).toUTCString() }).end();
      else res.writeHead(200).end("blob");
    });
    try {
      expect(await get(opts(), s.host)).toEqual({ status: 200, text: "blob" });
      expect(events).toEqual([
        { registry: s.host, what: `get ${BLOB}`, attempt: 1, delayMs: 0, reason: "HTTP 503", status: 503 },
        { registry: s.host, what: `get ${BLOB}`, attempt: 2, delayMs: 0, reason: "HTTP 429", status: 429 },
      ]);
    } finally {
      await s.stop();
    }
  });

  it("retries a dropped connection after a backoff, and gives up at the attempt limit keeping the status", async () => {
    events.length = 0;
    const s = await serve((req, res, n) => {
      if (req.url === BLOB && n === 1) return void req.socket.destroy();
      if (req.url === BLOB) return void res.writeHead(200).end("blob");
      res.writeHead(502, { "content-type": "application/json" }).end('{"errors":[{"code":"UNAVAILABLE","message":"down"}]}');
    });
    try {
      expect(await get(opts(), s.host)).toEqual({ status: 200, text: "blob" });
      expect(events).toEqual([{ registry: s.host, what: `get ${BLOB}`, attempt: 1, delayMs: expect.any(Number), reason: "ECONNRESET" }]);
      expect(events[0]!.delayMs).toBeGreaterThanOrEqual(5);
      expect(events[0]!.delayMs).toBeLessThanOrEqual(10);
      const err = (await get(opts(3), s.host, "/v2/app/manifests/v1").catch((e: unknown) => e)) as OcibuildError;
      expect(err.code).toBe("REGISTRY_SERVER_ERROR");
      expect(err.retryable).toBe(true);
      expect(err.details).toMatchObject({ status: 502, errors: [{ code: "UNAVAILABLE", message: "down" }] });
      expect(s.seen.filter((x) => x.url === "/v2/app/manifests/v1")).toHaveLength(3);
      // A request that asks for no retries gets none.
      const once = (await get(opts(), s.host, "/v2/app/manifests/once", { retry: false }).catch((e: unknown) => e)) as OcibuildError;
      expect(once.code).toBe("REGISTRY_SERVER_ERROR");
      expect(s.seen.filter((x) => x.url === "/v2/app/manifests/once")).toHaveLength(1);
    } finally {
      await s.stop();
    }
  });

  it("fails a stalled answer with REGISTRY_TIMEOUT after --registry-timeout, and retries it", async () => {
    events.length = 0;
    const s = await serve((_req, res, n) => {
      if (n > 1) res.writeHead(200).end("late");
    });
    try {
      expect(await get({ ...opts(), timeoutSeconds: 0.3 }, s.host)).toEqual({ status: 200, text: "late" });
      expect(events.map((e) => e.reason)).toEqual(["REGISTRY_TIMEOUT"]);
    } finally {
      await s.stop();
    }
  });

  it("stops waiting with ABORTED when the signal fires", async () => {
    const s = await serve((_req, res) => void res.writeHead(503, { "retry-after": "30" }).end());
    const ac = new AbortController();
    try {
      const started = Date.now();
      setTimeout(() => ac.abort(new Error("stop")), 200);
      const err = (await get(opts(), s.host, BLOB, { signal: ac.signal }).catch((e: unknown) => e)) as OcibuildError;
      expect(err.code).toBe("ABORTED");
      expect(Date.now() - started).toBeLessThan(5000);
      expect(s.seen.filter((x) => x.url === BLOB)).toHaveLength(1);
    } finally {
      await s.stop();
    }
  });
});

describe("the auth layer and token requests", () => {
  const events: RetryEvent[] = [];
  const tokenScopes: string[][] = [];
  let tokens: TestServer;
  let registry: TestServer;
  beforeAll(async () => {
    // The token service fails twice for the scope "repository:flaky:pull" (a 503, then a dropped connection).
    tokens = await serve((req, res) => {
      const scopes = new URL(req.url!, "http://x").searchParams.getAll("scope");
      tokenScopes.push(scopes);
      const flaky = tokens.seen.filter((x) => x.url.includes("flaky")).length;
      if (scopes.includes("repository:flaky:pull") && flaky === 1) return void res.writeHead(503, { "retry-after": "0" }).end();
      if (scopes.includes("repository:flaky:pull") && flaky === 2) return void req.socket.destroy();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: scopes.join(" ") || "none" }));
    });
    // The registry wants a token with every scope it names for /v2/two/ (insufficient_scope), and never accepts one for /v2/never/.
    registry = await serve((req, res) => {
      const realm = `Bearer realm="http://${tokens.host}/token",service="svc"`;
      const want = req.url!.startsWith("/v2/two/") ? "repository:other:pull repository:two:pull" : `repository:${req.url!.split("/")[2]}:pull`;
      if (req.url!.startsWith("/v2/never/") || req.headers.authorization !== `Bearer ${want}`) {
        return void res.writeHead(401, { "www-authenticate": `${realm},scope="${want}"` }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      }
      res.writeHead(200).end("ok");
    }, { registry: true });
  });
  afterAll(async () => {
    await registry?.stop();
    await tokens?.stop();
  });

  it("retries the token service's 503 and dropped connection, reporting them through onRetry", async () => {
    events.length = 0;
    const c = new RegistryClient({ retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 10 }, onRetry: (e) => events.push(e) });
    try {
      // A HEAD of a blob of repository "flaky": 401, a token (after two failures), then 200.
      expect(await c.blobExists(parseReference(`${registry.host}/flaky:v1`), parseDigest(`sha256:${"0".repeat(64)}`))).toBe(true);
    } finally {
      await c.close();
    }
    const what = `get a token from http://${tokens.host}`;
    expect(events).toEqual([
      { registry: registry.host, what, attempt: 1, delayMs: 0, reason: "HTTP 503", status: 503 },
      { registry: registry.host, what, attempt: 2, delayMs: expect.any(Number), reason: "ECONNRESET" },
    ]);
  });

  it("answers a challenge once, asking for every scope it names; a second 401 is REGISTRY_UNAUTHORIZED", async () => {
    tokenScopes.length = 0;
    expect(await get({}, registry.host, "/v2/two/blobs/sha256:0000", { scopes: [{ repository: "two", actions: ["pull"] }] })).toEqual({ status: 200, text: "ok" });
    expect(tokenScopes.at(-1)).toEqual(["repository:other:pull", "repository:two:pull"]);
    const before = registry.seen.length;
    const err = (await get({}, registry.host, "/v2/never/blobs/sha256:0000").catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(err.message).toContain(registry.host);
    // No /v2/ probe first: the request twice, without a token and with one.
    expect(registry.seen.slice(before).map((x) => [x.url, x.authorization !== undefined])).toEqual([
      ["/v2/never/blobs/sha256:0000", false],
      ["/v2/never/blobs/sha256:0000", true],
    ]);
  });
});

describe("the redirect layer", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-layers-"));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("follows a redirect to another host without the registry's Authorization, and stops a redirect loop", async () => {
    const store = await serve((_req, res) => void res.writeHead(200).end("from the store"), { address: "127.0.0.2", registry: false });
    const basic = `Basic ${Buffer.from("me:secret").toString("base64")}`;
    const origin = await serve((req, res) => {
      if (req.headers.authorization !== basic) return void res.writeHead(401, { "www-authenticate": 'Basic realm="r"' }).end();
      if (req.url === "/v2/app/loop") return void res.writeHead(302, { location: "/v2/app/loop" }).end();
      res.writeHead(307, { location: `http://${store.host}/bucket/blob?sig=1` }).end();
    });
    const config = join(dir, "config.json");
    await writeFile(config, JSON.stringify({ auths: { [origin.host]: { auth: Buffer.from("me:secret").toString("base64") } } }));
    try {
      expect(await get({ authConfigPath: config }, origin.host)).toEqual({ status: 200, text: "from the store" });
      expect(origin.seen.filter((x) => x.url === BLOB).map((x) => x.authorization)).toEqual([undefined, basic]);
      expect(store.seen).toEqual([{ method: "GET", url: "/bucket/blob?sig=1", authorization: undefined }]);
      const err = (await get({ authConfigPath: config }, origin.host, "/v2/app/loop").catch((e: unknown) => e)) as OcibuildError;
      expect(err.code).toBe("REGISTRY_REDIRECT_LOOP");
      // The first answer (401), then the request and ten redirects followed.
      expect(origin.seen.filter((x) => x.url === "/v2/app/loop")).toHaveLength(12);
    } finally {
      await origin.stop();
      await store.stop();
    }
  });
});

describe("the scheme layer", () => {
  it("allows plain HTTP for loopback, insecure registries and http:// mirrors only", () => {
    expect(mayUseHttp({}, "registry.example.com")).toBe(false);
    expect(mayUseHttp({}, "localhost:5000")).toBe(true);
    expect(mayUseHttp({}, "[::1]:5000")).toBe(true);
    expect(mayUseHttp({ insecureRegistries: ["registry.example.com"] }, "registry.example.com")).toBe(true);
    expect(mayUseHttp({ registryMirrors: ["http://mirror.example:5000"] }, "mirror.example:5000")).toBe(true);
    expect(mayUseHttp({ registryMirrors: ["https://mirror.example:5000"] }, "mirror.example:5000")).toBe(false);
  });

  it("sends a loopback registry's first request over plain HTTP at once, and probes (HTTPS first) when the host does not answer as a registry", async () => {
    const reg = await serve((_req, res) => void res.writeHead(200).end("blob"));
    const other = await serve((req, res) => void res.writeHead(200).end(req.url === "/v2/" ? "{}" : "blob"), { registry: false });
    try {
      // No /v2/ probe before the request: its answer (with the API version header) settles the scheme.
      expect(await get({}, reg.host)).toEqual({ status: 200, text: "blob" });
      expect(reg.seen.map((x) => x.url)).toEqual([BLOB]);
      expect(reg.clientErrors).toBe(0);
      // An answer without it is held while the probe decides: plain /v2/ (no registry), HTTPS (refused), so plain HTTP after all.
      expect(await get({}, other.host)).toEqual({ status: 200, text: "blob" });
      expect(other.clientErrors).toBe(1);
      expect(other.seen.map((x) => x.url)).toEqual([BLOB, "/v2/"]);
    } finally {
      await reg.stop();
      await other.stop();
    }
  });

  it.skipIf(!haveOpenssl())("sends the first request again over HTTPS when a loopback host speaks only TLS", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-scheme-"));
    const ca = await makeCA(dir);
    const seen: string[] = [];
    let plainTries = 0;
    const server = createTlsServer({ cert: await readFile(ca.serverCert), key: await readFile(ca.serverKey) }, (req, res) => {
      seen.push(req.url!);
      res.writeHead(200, { "docker-distribution-api-version": "registry/2.0" }).end(req.url === "/v2/" ? "{}" : "blob");
    });
    server.on("tlsClientError", () => plainTries++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect(await get({ registryCertificates: { [host]: ca.caCert } }, host)).toEqual({ status: 200, text: "blob" });
      // The guess (plain HTTP) and the plain /v2/ probe fail the handshake; HTTPS /v2/ answers; the request again over HTTPS.
      expect(plainTries).toBe(2);
      expect(seen).toEqual(["/v2/", BLOB]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    }
  });
});
