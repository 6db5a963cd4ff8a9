/**
 * kaniko's and docker build's flags that map onto ocibuild options: each reaches the
 * option it stands for; no-ops warn where a user could expect an effect; refusals name
 * what to use instead.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuildArgs } from "../../src/cli/commands/build-options.js";
import { captureIO } from "../dockerfile/cli-io.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-compat-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function parse(args: string[]) {
  const cap = captureIO({ cwd: work });
  const inv = await parseBuildArgs(args, cap.io);
  return { inv, o: inv.options, stderr: cap.stderr() };
}

async function refusal(args: string[]): Promise<{ code: string; message: string }> {
  try {
    await parse(args);
  } catch (e) {
    return e as { code: string; message: string };
  }
  throw new Error(`${args.join(" ")} was accepted`);
}

describe("kaniko's registry flags map onto the registry client", () => {
  it("--insecure allows plain HTTP for the push targets only; --insecure-pull for every registry", async () => {
    const { o } = await parse(["--insecure", "-d", "reg.lan:5000/app:1", "-o", "type=registry,name=other.lan/app:1", "."]);
    expect(o.registry?.insecureRegistries).toEqual(["reg.lan:5000", "other.lan"]);
    expect(o.registry?.insecureAll).toBeUndefined();
    const pull = await parse(["--insecure-pull", "-d", "reg.lan/app:1", "."]);
    expect(pull.o.registry?.insecureAll).toBe(true);
    expect(pull.o.registry?.insecureRegistries).toEqual([]);
  });

  it("--skip-tls-verify-pull is --skip-tls-verify", async () => {
    expect((await parse(["--skip-tls-verify-pull", "."])).o.registry?.skipTlsVerify).toBe(true);
  });

  it("--push-retry and --image-download-retry raise the retry count, never lower it", async () => {
    expect((await parse(["--push-retry", "7", "."])).o.registry?.retry?.attempts).toBe(8);
    expect((await parse(["--image-download-retry=9", "--push-retry=2", "."])).o.registry?.retry?.attempts).toBe(10);
    expect((await parse(["--push-retry", "1", "."])).o.registry?.retry).toBeUndefined();
    expect((await refusal(["--push-retry", "many", "."])).code).toBe("USAGE_BAD_VALUE");
  });

  it("--registry-map becomes per-registry mirrors; Docker Hub's names are one", async () => {
    const { o } = await parse(["--registry-map", "index.docker.io=mirror.lan;gcr.io=127.0.0.1:5000", "--registry-map=gcr.io=http://gcr-mirror.lan", "."]);
    expect(o.registry?.registryMap).toEqual({ "docker.io": ["mirror.lan"], "gcr.io": ["127.0.0.1:5000", "http://gcr-mirror.lan"] });
    const path = await refusal(["--registry-map", "docker.io=harbor.lan/project", "."]);
    expect(path.code).toBe("USAGE_UNSUPPORTED_FLAG");
    expect((await refusal(["--registry-map", "nomirror", "."])).code).toBe("USAGE_BAD_VALUE");
  });

  it("--registry-client-cert takes HOST=CERT,KEY", async () => {
    const { o } = await parse(["--registry-client-cert", "reg.lan=/c.crt,/c.key", "."]);
    expect(o.registry?.registryClientCerts).toEqual({ "reg.lan": { cert: "/c.crt", key: "/c.key" } });
    expect((await refusal(["--registry-client-cert", "reg.lan=/c.crt", "."])).code).toBe("USAGE_BAD_VALUE");
  });
});

describe("kaniko's cache and context flags", () => {
  it("--cache=true changes nothing; --cache=false reads and writes no cache", async () => {
    const on = await parse(["--cache=true", "."]);
    expect(on.o.noCache).toBeUndefined();
    const off = await parse(["--cache=false", "."]);
    expect([off.o.noCache, off.o.noCacheWrite]).toEqual([true, true]);
  });

  it("--no-push-cache keeps --cache-repo readable but not written", async () => {
    const { o } = await parse(["--cache-repo", "reg.lan/cache", "--no-push-cache", "."]);
    expect(o.cacheRepo).toBe("reg.lan/cache");
    expect(o.noCacheRepoWrite).toBe(true);
  });

  it("--context-sub-path builds a subdirectory of the context", async () => {
    const { o } = await parse(["--context", "dir:///workspace", "--context-sub-path", "services/api"]);
    expect(o.context).toBe("/workspace/services/api");
  });
});

describe("accepted no-ops, and what they say", () => {
  it("--compression (kaniko) and buildx's compression= output attributes set the layer compression; levels are checked per compression", async () => {
    expect((await parse(["--compression", "gzip", "."])).o.compression).toBe("gzip");
    const z = await parse(["--compression=zstd", "--compression-level", "19", "."]);
    expect([z.o.compression, z.o.compressionLevel, z.o.forceCompression, z.stderr]).toEqual(["zstd", 19, undefined, ""]);
    const o = await parse(["-o", "type=oci,dest=x.tar,compression=zstd,compression-level=1,force-compression=true", "."]);
    expect([o.o.compression, o.o.compressionLevel, o.o.forceCompression]).toEqual(["zstd", 1, true]);
    expect((await parse(["--compression", "uncompressed", "."])).o.compression).toBe("uncompressed");
    expect((await parse(["."])).o.compression).toBeUndefined();
    for (const [args, why] of [
      [["--compression-level", "12", "."], /gzip compression level must be 0-9, not "12"/],
      [["--compression", "zstd", "--compression-level", "23", "."], /zstd compression level must be 0-22/],
      [["--compression", "xz", "."], /compression takes gzip, zstd, uncompressed, not "xz"/],
      [["-o", "type=oci,dest=x.tar,compression=estargz", "."], /estargz is not supported/],
      [["--compression", "gzip", "-o", "type=oci,dest=x.tar,compression=zstd", "."], /ask for different compressions \(gzip and zstd\)/],
      [["-o", "type=oci,dest=x.tar,force-compression=yes", "."], /force-compression=yes: use true or false/],
    ] as const) {
      const r = await refusal([...args]);
      expect(r.code).toBe("USAGE_BAD_VALUE");
      expect(r.message).toMatch(why);
    }
  });

  it("no-ops a user could expect an effect from warn; the others are silent", async () => {
    const { stderr } = await parse(["--kaniko-dir", "/kaniko", "--single-snapshot", "--ignore-path", "/busybox", "--log-format", "json", "."]);
    expect(stderr).toMatch(/^warning: --kaniko-dir \/kaniko is ignored/m);
    expect(stderr).toMatch(/^warning: --single-snapshot is ignored/m);
    expect(stderr).toMatch(/^warning: --ignore-path \/busybox is ignored/m);
    expect(stderr).toMatch(/^warning: --log-format json changes nothing/m);
    const quiet = await parse(["--cleanup", "--force", "--use-new-run", "--skip-unused-stages", "--snapshot-mode=redo", "-v", "debug", "--pull", "--rm", "--force-rm", "."]);
    expect(quiet.stderr).toBe("");
  });

  it("a choice flag with a value kaniko does not know is a usage error", async () => {
    expect((await refusal(["--snapshot-mode", "fast", "."])).code).toBe("USAGE_BAD_VALUE");
    expect((await refusal(["--verbosity", "loud", "."])).code).toBe("USAGE_BAD_VALUE");
  });

  it("--provenance, --sbom and --attest map onto attest; false turns one off; a bad value is a usage error", async () => {
    expect((await parse(["--provenance=false", "--sbom", "false", "."])).inv.options.attest).toBeUndefined();
    expect((await parse(["--provenance", "true", "."])).inv.options.attest).toEqual({ provenance: { mode: "min" } });
    expect((await parse(["--provenance", "mode=max,version=v0.2", "--sbom=true", "."])).inv.options.attest).toEqual({ provenance: { mode: "max", version: "v0.2" }, sbom: {} });
    expect((await parse(["--attest", "type=provenance,mode=max", "--attest", "type=sbom", "."])).inv.options.attest).toEqual({ provenance: { mode: "max", version: "v1" }, sbom: {} });
    expect((await parse(["--sbom=true", "--attest", "type=sbom,disabled=true", "."])).inv.options.attest).toBeUndefined();
    for (const bad of [["--provenance", "mode=full"], ["--attest", "type=vex"], ["--sbom", "generator=docker/scout-sbom-indexer"]]) {
      const r = await refusal([...bad, "."]);
      expect([bad, r.code]).toEqual([bad, "USAGE_BAD_VALUE"]);
    }
  });

  it("--annotation and --sign-key map onto annotations and sign", async () => {
    const { inv } = await parse(["--annotation", "index,manifest[linux/arm64]:k=v", "--sign-key", "k.pem", "--sign-key-password-file", "pw", "."]);
    expect(inv.options.annotations).toEqual([{ levels: ["index", "manifest"], platform: { os: "linux", architecture: "arm64" }, key: "k", value: "v" }]);
    expect(inv.options.sign).toEqual({ key: expect.stringMatching(/\/k\.pem$/), passwordFile: expect.stringMatching(/\/pw$/) });
    expect((await refusal(["--sign-key-password-file", "pw", "."])).code).toBe("USAGE_MISSING_VALUE");
  });

  it("--progress rawjson is the json event stream; --progress quiet is -q", async () => {
    expect((await parse(["--progress", "rawjson", "."])).inv.progress).toBe("json");
    expect((await parse(["--progress=quiet", "."])).inv.quiet).toBe(true);
  });
});

describe("docker build's sandbox flags", () => {
  it("--add-host takes HOST:IP or HOST=IP, IPv6 included; host-gateway is refused with a pointer", async () => {
    const { o } = await parse(["--add-host", "db:10.0.0.5", "--add-host", "v6=[fd00::2]", "--add-host", "v6b:fd00::3", "."]);
    expect(o.sandbox?.extraHosts).toEqual([["db", "10.0.0.5"], ["v6", "fd00::2"], ["v6b", "fd00::3"]]);
    expect((await refusal(["--add-host", "db", "."])).code).toBe("USAGE_BAD_VALUE");
    expect((await refusal(["--add-host", "db:not-an-ip", "."])).code).toBe("USAGE_BAD_VALUE");
    const gw = await refusal(["--add-host", "host.docker.internal:host-gateway", "."]);
    expect([gw.code, gw.message]).toEqual(["USAGE_UNSUPPORTED_FLAG", expect.stringMatching(/host-gateway/)]);
  });

  it("--shm-size is a size; --ulimit is NAME=SOFT[:HARD] with docker's names", async () => {
    const { o } = await parse(["--shm-size", "64m", "--ulimit", "nofile=1024:2048", "--ulimit", "core=-1", "--ulimit", "nproc=50", "."]);
    expect(o.sandbox?.shmSize).toBe(64 * 2 ** 20);
    expect(o.sandbox?.ulimits).toEqual([
      { name: "nofile", soft: "1024", hard: "2048" },
      { name: "core", soft: "unlimited", hard: "unlimited" },
      { name: "nproc", soft: "50", hard: "50" },
    ]);
    for (const bad of ["nofile", "files=10", "nofile=20:10", "nofile=-1:10", "nofile=ten"]) {
      expect((await refusal(["--ulimit", bad, "."])).code).toBe("USAGE_BAD_VALUE");
    }
  });

  it("they apply to the bubblewrap sandbox: with --executor buildkit they are refused by name", async () => {
    const r = await refusal(["--executor", "buildkit", "--cache-repo", "reg.lan/c", "--shm-size", "64m", "."]);
    expect(r.code).toBe("USAGE_UNSUPPORTED_FLAG");
    expect(r.message).toMatch(/--shm-size is not supported with --executor buildkit/);
  });
});
