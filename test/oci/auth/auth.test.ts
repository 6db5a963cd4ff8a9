import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { Authenticator, CredentialStore, normalizeAuthKey, parseChallenges, scopeStrings } from "../../../src/oci/auth/index.js";

describe("parseChallenges", () => {
  it("parses Bearer with quoted params containing commas and escapes", () => {
    const c = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push",error="a\\"b"');
    expect(c).toEqual([
      { scheme: "bearer", params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/ubuntu:pull,push", error: 'a"b' } },
    ]);
  });
  it("parses Basic, unquoted tokens, several challenges, preferring Bearer; ignores unknown schemes", () => {
    const c = parseChallenges(['Basic realm="Registry Realm"', "Negotiate abc", "Bearer realm=https://r.example/t, service=svc"]);
    expect(c.map((x) => x.scheme)).toEqual(["bearer", "basic"]);
    expect(c[0]!.params).toEqual({ realm: "https://r.example/t", service: "svc" });
    expect(c[1]!.params).toEqual({ realm: "Registry Realm" });
    expect(parseChallenges(undefined)).toEqual([]);
    expect(parseChallenges("")).toEqual([]);
  });
});

describe("scopeStrings", () => {
  it("merges actions per repository and sorts", () => {
    expect(
      scopeStrings([
        { repository: "b/x", actions: ["push"] },
        { repository: "a/y", actions: ["pull"] },
        { repository: "b/x", actions: ["pull"] },
      ]),
    ).toEqual(["repository:a/y:pull", "repository:b/x:pull,push"]);
  });
});

describe("normalizeAuthKey", () => {
  it.each([
    ["https://index.docker.io/v1/", "docker.io"],
    ["index.docker.io", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["docker.io", "docker.io"],
    ["https://GHCR.io", "ghcr.io"],
    ["http://127.0.0.1:5000/v2/", "127.0.0.1:5000"],
    ["quay.io/org/repo", "quay.io"],
  ])("%s -> %s", (k, want) => expect(normalizeAuthKey(k)).toBe(want));
});

describe("CredentialStore", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-auth-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const b64 = (s: string) => Buffer.from(s).toString("base64");

  it("reads auths from $DOCKER_CONFIG/config.json: base64 auth, username/password, identitytoken; Docker Hub aliases", async () => {
    const d = join(dir, "docker");
    await mkdir(d, { recursive: true });
    await writeFile(
      join(d, "config.json"),
      JSON.stringify({
        auths: {
          "https://index.docker.io/v1/": { auth: b64("hubuser:hub:pass:with:colons") },
          "ghcr.io": { username: "gh", password: "ghp_x" },
          "https://quay.io": { identitytoken: "refresh-1" },
          "empty.example": {},
        },
      }),
    );
    const s = new CredentialStore({ env: { DOCKER_CONFIG: d, HOME: "/nonexistent" } });
    expect(await s.get("docker.io")).toEqual({ username: "hubuser", password: "hub:pass:with:colons", source: join(d, "config.json") });
    expect(await s.get("registry-1.docker.io")).toMatchObject({ username: "hubuser" });
    expect(await s.get("ghcr.io")).toMatchObject({ username: "gh", password: "ghp_x" });
    expect(await s.get("quay.io")).toMatchObject({ identityToken: "refresh-1" });
    expect(await s.get("empty.example")).toBeUndefined();
    expect(await s.get("other.example")).toBeUndefined();
  });

  it("falls back from ~/.docker/config.json; REGISTRY_AUTH_FILE (podman) comes first", async () => {
    const home = join(dir, "home");
    await mkdir(join(home, ".docker"), { recursive: true });
    await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ auths: { "a.example": { auth: b64("docker:1") }, "b.example": { auth: b64("docker:2") } } }));
    const podman = join(dir, "auth.json");
    await writeFile(podman, JSON.stringify({ auths: { "a.example": { auth: b64("podman:1") } } }));
    const s = new CredentialStore({ env: { HOME: home, REGISTRY_AUTH_FILE: podman } });
    expect(await s.get("a.example")).toMatchObject({ username: "podman", source: podman });
    expect(await s.get("b.example")).toMatchObject({ username: "docker", password: "2" });
  });

  it("prefers podman's repository-specific entries, the longest match first", async () => {
    const f = join(dir, "podman-auth.json");
    await writeFile(
      f,
      JSON.stringify({
        auths: {
          "quay.io": { auth: b64("host:1") },
          "quay.io/org": { auth: b64("org:2") },
          "quay.io/org/app": { auth: b64("app:3") },
          "https://registry.example/v1/": { auth: b64("docker-style:4") },
        },
      }),
    );
    const s = new CredentialStore({ authConfigPath: f });
    expect((await s.get("quay.io", undefined, "org/app"))?.username).toBe("app");
    expect((await s.get("quay.io", undefined, "org/app-two"))?.username).toBe("org");
    expect((await s.get("quay.io", undefined, "org/app/sub"))?.username).toBe("app");
    expect((await s.get("quay.io", undefined, "other/x"))?.username).toBe("host");
    expect((await s.get("quay.io"))?.username).toBe("host");
    // A scheme means Docker's host-only key: "/v1/" is not a namespace.
    expect((await s.get("registry.example", undefined, "any/repo"))?.username).toBe("docker-style");
  });

  it("runs credHelpers, then credsStore, reading <token> users as identity tokens", async () => {
    const bin = join(dir, "bin");
    await mkdir(bin, { recursive: true });
    const helper = (name: string, body: string) => writeFile(join(bin, `docker-credential-${name}`), `#!/bin/sh\nread host\n${body}\n`).then(() => chmod(join(bin, `docker-credential-${name}`), 0o755));
    await helper("per", `printf '{"ServerURL":"%s","Username":"per-user","Secret":"per-secret"}' "$host"`);
    await helper("store", `if [ "$host" = "https://index.docker.io/v1/" ]; then printf '{"Username":"<token>","Secret":"hub-refresh"}'; exit 0; fi; echo "credentials not found in native keychain"; exit 1`);
    await helper("broken", `echo "leaked-secret-on-stderr" >&2; exit 3`);
    const d = join(dir, "helpers");
    await mkdir(d, { recursive: true });
    await writeFile(join(d, "config.json"), JSON.stringify({ credHelpers: { "per.example": "per", "broken.example": "broken", "missing.example": "nothere" }, credsStore: "store", auths: { "docker.io": {} } }));
    const s = new CredentialStore({ env: { DOCKER_CONFIG: d, PATH: `${bin}:/usr/bin:/bin` } });
    expect(await s.get("per.example")).toEqual({ username: "per-user", password: "per-secret", source: "docker-credential-per" });
    expect(await s.get("docker.io")).toEqual({ identityToken: "hub-refresh", source: "docker-credential-store" });
    expect(await s.get("unknown.example")).toBeUndefined();
    const err = (await s.get("broken.example").catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("AUTH_HELPER_FAILED");
    expect(err.message).toContain("exit status 3");
    expect(err.message).not.toContain("leaked-secret");
    const err2 = (await s.get("missing.example").catch((e: unknown) => e)) as OcibuildError;
    expect(err2.code).toBe("AUTH_HELPER_FAILED");
    expect(err2.hint).toContain("docker-credential-nothere");
  });

  it("reports a broken config file by path without its contents", async () => {
    const d = join(dir, "broken");
    await mkdir(d, { recursive: true });
    await writeFile(join(d, "config.json"), '{"auths": {"x": {"auth": "c2VjcmV0"}');
    const err = (await new CredentialStore({ env: { DOCKER_CONFIG: d } }).get("x").catch((e: unknown) => e)) as OcibuildError;
    expect(err).toBeInstanceOf(OcibuildError);
    expect(err.code).toBe("AUTH_CONFIG_INVALID");
    expect(err.message).toContain(join(d, "config.json"));
    expect(err.message).not.toContain("c2VjcmV0");
    await writeFile(join(d, "config.json"), JSON.stringify({ auths: { x: { auth: b64("nocolon") } } }));
    const err2 = (await new CredentialStore({ env: { DOCKER_CONFIG: d } }).get("x").catch((e: unknown) => e)) as OcibuildError;
    expect(err2.code).toBe("AUTH_CONFIG_INVALID");
    expect(err2.message).not.toContain("nocolon");
  });
});

describe("Authenticator", () => {
  const store = (creds?: { username: string; password: string }) =>
    ({ get: async () => (creds ? { ...creds, source: "test" } : undefined) }) as unknown as CredentialStore;

  it("fetches bearer tokens per scope set, caches them until shortly before expiry, then fetches again", async () => {
    let now = 1_000_000;
    const calls: string[] = [];
    const auth = new Authenticator(
      store({ username: "u", password: "p" }),
      async (url, init) => {
        calls.push(`${init.method} ${url.search} ${init.headers.authorization ?? "-"}`);
        return { status: 200, text: JSON.stringify({ token: `tok${calls.length}`, expires_in: 300 }) };
      },
      () => now,
    );
    expect(auth.learn("r.example", 'Bearer realm="https://auth.example/token",service="svc"')).toBe(true);
    const pull = [{ repository: "a/b", actions: ["pull" as const] }];
    expect(await auth.authorize("r.example", pull)).toBe("Bearer tok1");
    expect(await auth.authorize("r.example", pull)).toBe("Bearer tok1");
    expect(calls[0]).toBe(`GET ?service=svc&scope=repository%3Aa%2Fb%3Apull&account=u Basic ${Buffer.from("u:p").toString("base64")}`);
    expect(await auth.authorize("r.example", [{ repository: "a/b", actions: ["pull", "push"] }])).toBe("Bearer tok2");
    now += 271_000; // within the last 10% of 300 s: refreshed
    expect(await auth.authorize("r.example", pull)).toBe("Bearer tok3");
    expect(calls).toHaveLength(3);
  });

  it("shares one in-flight token request between concurrent callers", async () => {
    let n = 0;
    const auth = new Authenticator(store(), async () => {
      n++;
      await new Promise((r) => setTimeout(r, 10));
      return { status: 200, text: JSON.stringify({ access_token: "anon" }) };
    });
    auth.learn("r.example", 'Bearer realm="https://auth.example/token"');
    const pull = [{ repository: "x", actions: ["pull" as const] }];
    const got = await Promise.all([auth.authorize("r.example", pull), auth.authorize("r.example", pull), auth.authorize("r.example", pull)]);
    expect(got).toEqual(["Bearer anon", "Bearer anon", "Bearer anon"]);
    expect(n).toBe(1);
  });

  it("names the registry, not the secret, when the token service refuses", async () => {
    const auth = new Authenticator(store({ username: "u", password: "hunter2-secret" }), async () => ({ status: 401, text: "{}" }));
    auth.learn("r.example", 'Bearer realm="https://auth.example/token"');
    const err = (await auth.authorize("r.example", []).catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(err.message).toContain("r.example");
    expect(JSON.stringify({ m: err.message, h: err.hint, d: err.details })).not.toContain("hunter2");
  });

  it("answers Basic challenges with stored credentials, and refuses clearly without them", async () => {
    const auth = new Authenticator(store({ username: "u", password: "p" }), async () => {
      throw new Error("no token service for Basic");
    });
    auth.learn("b.example", 'Basic realm="x"');
    expect(await auth.authorize("b.example", [])).toBe(`Basic ${Buffer.from("u:p").toString("base64")}`);
    const anon = new Authenticator(store(), async () => ({ status: 500, text: "" }));
    anon.learn("b.example", 'Basic realm="x"');
    const err = (await anon.authorize("b.example", []).catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(err.message).toContain("b.example");
  });
});
