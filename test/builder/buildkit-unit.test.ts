/**
 * The BuildKit client's parts that need no daemon: the protobuf codec, the LLB
 * for one RUN, address parsing, error mapping, the daemon's layer entries, the
 * executor flags, an unreachable daemon failing with a clear code, and the parts of
 * the executor's run that need no daemon (refusals, the step's LLB, the Status
 * stream, the result check).
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildkitExecutor, exitCodeOf, parseBuildkitVersion } from "../../src/builder/sandbox/buildkit.js";
import { BuildkitClient, grpcTarget } from "../../src/builder/sandbox/buildkit/client.js";
import { toLayerEntry } from "../../src/builder/sandbox/buildkit/layer.js";
import { execDefinition } from "../../src/builder/sandbox/buildkit/llb.js";
import { decodeSolveResponse, decodeStatusResponse, encodeSolveRequest, type StatusResponse } from "../../src/builder/sandbox/buildkit/messages.js";
import { llbMounts } from "../../src/builder/sandbox/buildkit/mounts.js";
import { newLayerIndex, StatusFollower, stepDefinition, type BuildkitStepSpec } from "../../src/builder/sandbox/buildkit/step.js";
import type { StageState } from "../../src/builder/stage-state.js";
import { OcibuildError } from "../../src/errors.js";
import { ProtoWriter, readFields, readMapEntry, toInt } from "../../src/builder/sandbox/buildkit/proto.js";
import type { TarEntry } from "../../src/builder/fs/tar-reader.js";
import { EXECUTOR_FLAGS, executorFrom } from "../../src/cli/commands/buildkit.js";
import { parseFlags } from "../../src/cli/flags.js";
import { captureIO } from "../dockerfile/cli-io.js";

/** Fields of a message as [number, value] pairs; bytes as Buffers, varints as numbers. */
function fields(buf: Buffer): Array<[number, Buffer | number]> {
  return [...readFields(buf)].map((f) => [f.field, f.wire === 0 ? toInt(f.varint) : Buffer.from(f.data)]);
}
const sub = (buf: Buffer, n: number): Buffer[] => fields(buf).filter(([k]) => k === n).map(([, v]) => v as Buffer);
const text = (buf: Buffer, n: number): string[] => sub(buf, n).map((b) => b.toString("utf8"));

describe("protobuf wire codec", () => {
  it("encodes varints like protoc (150 -> 96 01), negatives as ten bytes, and skips proto3 zero values", () => {
    expect(new ProtoWriter().int(1, 150).finish().toString("hex")).toBe("089601");
    const neg = new ProtoWriter().int(4, -1).finish();
    expect(neg.length).toBe(11);
    expect(fields(neg)).toEqual([[4, -1]]);
    expect(new ProtoWriter().int(1, 0).string(2, "").bool(3, false).finish().length).toBe(0);
    expect(new ProtoWriter().string(2, "testing").finish().toString("hex")).toBe("120774657374696e67");
  });

  it("writes maps as sorted entries and reads them back", () => {
    const buf = new ProtoWriter().stringMap(4, { push: "true", name: "r/x" }).finish();
    const entries = sub(buf, 4).map(readMapEntry);
    expect(entries).toEqual([["name", "r/x"], ["push", "true"]]);
  });

  it("a SolveRequest carries ref, definition, exporter and its attributes under BuildKit's field numbers", () => {
    const buf = encodeSolveRequest({ ref: "abc", definition: Buffer.from([1, 2, 3]), exporter: "image", exporterAttrs: { push: "true" } });
    expect(text(buf, 1)).toEqual(["abc"]);
    expect(sub(buf, 2)).toEqual([Buffer.from([1, 2, 3])]);
    expect(text(buf, 3)).toEqual(["image"]);
    expect(sub(buf, 4).map(readMapEntry)).toEqual([["push", "true"]]);
    expect(text(buf, 9)).toEqual([]);
    // A RUN --network=host step asks the daemon for the network.host entitlement (field 9, Entitlements).
    expect(text(encodeSolveRequest({ ref: "abc", definition: Buffer.alloc(0), entitlements: ["network.host"] }), 9)).toEqual(["network.host"]);
  });

  it("decodes a SolveResponse's exporter response and a StatusResponse's logs, skipping unknown fields", () => {
    const resp = new ProtoWriter().stringMap(1, { "containerimage.digest": "sha256:aa" }).string(99, "future field").finish();
    expect(decodeSolveResponse(resp).exporterResponse).toEqual({ "containerimage.digest": "sha256:aa" });
    const log = new ProtoWriter().string(1, "sha256:v").message(2, new ProtoWriter().int(1, 1700000000).int(2, 5e8)).int(3, 2).bytes(4, Buffer.from("oops\n"));
    const vertex = new ProtoWriter().string(1, "sha256:v").string(3, "RUN x").bool(4, true).string(7, "failed");
    const status = decodeStatusResponse(new ProtoWriter().message(1, vertex).message(3, log).finish());
    expect(status.logs).toEqual([{ vertex: "sha256:v", timestamp: new Date(1700000000500), stream: 2, msg: Buffer.from("oops\n") }]);
    expect(status.vertexes[0]).toMatchObject({ digest: "sha256:v", name: "RUN x", cached: true, error: "failed" });
  });

  it("rejects a truncated message with a coded error", () => {
    const bad = Buffer.from([0x12, 0x05, 0x61]);
    expect(() => [...readFields(bad)]).toThrow(expect.objectContaining({ code: "BUILDKIT_PROTOCOL" }));
  });
});

describe("LLB for one RUN", () => {
  const spec = {
    image: "docker-image://127.0.0.1:5000/ci/staging@sha256:" + "ab".repeat(32),
    platform: { os: "linux", architecture: "amd64" },
    args: ["/bin/sh", "-c", "echo hi", ""],
    env: ["PATH=/bin", "A=1"],
    cwd: "/src",
    user: "app",
    network: "none" as const,
    description: "RUN echo hi",
  };

  it("chains source -> exec -> terminal op by the sha256 of each op's bytes", () => {
    const def = execDefinition(spec);
    const ops = sub(def.bytes, 1);
    expect(ops).toHaveLength(3);
    const digest = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    const [source, exec, terminal] = ops as [Buffer, Buffer, Buffer];
    // The source op: identifier and platform.
    const src = sub(source, 3)[0]!;
    expect(text(src, 1)).toEqual([spec.image]);
    const plat = sub(source, 10)[0]!;
    expect([text(plat, 1), text(plat, 2)]).toEqual([["amd64"], ["linux"]]);
    // The exec op takes the source as input 0 and is what the terminal op points at.
    expect(text(sub(exec, 1)[0]!, 1)).toEqual([digest(source)]);
    expect(def.execDigest).toBe(digest(exec));
    expect(text(sub(terminal, 1)[0]!, 1)).toEqual([digest(exec)]);
    // Metadata for the exec: ignore the daemon's cache (ours decided), and its progress name.
    const entries = sub(def.bytes, 2);
    expect(entries).toHaveLength(1);
    expect(text(entries[0]!, 1)).toEqual([def.execDigest]);
    const opMeta = sub(entries[0]!, 2)[0]!;
    expect(fields(opMeta).filter(([k]) => k === 1)).toEqual([[1, 1]]);
    expect(sub(opMeta, 2).map(readMapEntry)).toEqual([["llb.customname", "RUN echo hi"]]);
  });

  it("the exec op has argv (empty words kept), env, cwd, user, the network mode and a writable root mount", () => {
    const exec = sub(execDefinition(spec).bytes, 1)[1]!;
    const op = sub(exec, 2)[0]!;
    const meta = sub(op, 1)[0]!;
    expect(text(meta, 1)).toEqual(spec.args);
    expect(text(meta, 2)).toEqual(spec.env);
    expect(text(meta, 3)).toEqual(["/src"]);
    expect(text(meta, 4)).toEqual(["app"]);
    expect(fields(op).filter(([k]) => k === 3)).toEqual([[3, 2]]); // NetMode NONE
    const mounts = sub(op, 2);
    expect(mounts).toHaveLength(1);
    // input 0 and output 0 are proto3 defaults (absent); dest "/".
    expect(fields(mounts[0]!)).toEqual([[3, Buffer.from("/")]]);
  });

  it("cache, secret and tmpfs mounts and secret env carry BuildKit's mount types and options", () => {
    const def = execDefinition({
      ...spec,
      mounts: [
        { type: "cache", target: "/root/.cache", id: "pip", sharing: "locked" },
        { type: "secret", target: "/run/secrets/token", id: "token", uid: 1000, gid: 50, mode: 0o400, optional: false },
        { type: "tmpfs", target: "/scratch", size: 1 << 20 },
      ],
      secretEnv: [{ id: "token", name: "TOKEN", optional: true }],
    });
    const op = sub(sub(def.bytes, 1)[1]!, 2)[0]!;
    const [, cache, secret, tmpfs] = sub(op, 2) as [Buffer, Buffer, Buffer, Buffer];
    expect(fields(cache).filter(([k]) => k !== 20)).toEqual([[1, -1], [3, Buffer.from("/root/.cache")], [4, -1], [6, 3]]);
    expect(fields(sub(cache, 20)[0]!)).toEqual([[1, Buffer.from("pip")], [2, 2]]);
    expect(fields(secret).filter(([k]) => k !== 21)).toEqual([[1, -1], [3, Buffer.from("/run/secrets/token")], [4, -1], [6, 1]]);
    expect(fields(sub(secret, 21)[0]!)).toEqual([[1, Buffer.from("token")], [2, 1000], [3, 50], [4, 0o400]]);
    expect(fields(sub(tmpfs, 19)[0]!)).toEqual([[1, 1 << 20]]);
    expect(fields(sub(op, 5)[0]!)).toEqual([[1, Buffer.from("token")], [2, Buffer.from("TOKEN")], [3, 1]]);
  });

  it("scratch has no source op and mounts nothing (-1) at /; tmpfs mounts have no input or output", () => {
    const def = execDefinition({ ...spec, image: undefined, network: "sandbox", mounts: [{ type: "tmpfs", target: "/tmp" }] });
    const ops = sub(def.bytes, 1);
    expect(ops).toHaveLength(2);
    const op = sub(ops[0]!, 2)[0]!;
    expect(fields(op).some(([k]) => k === 3)).toBe(false); // sandbox network is the default
    const [root, tmp] = sub(op, 2) as [Buffer, Buffer];
    expect(fields(root)).toEqual([[1, -1], [3, Buffer.from("/")]]);
    expect(fields(tmp).filter(([k]) => k !== 19)).toEqual([[1, -1], [3, Buffer.from("/tmp")], [4, -1], [6, 4]]);
  });
});

describe("addresses, versions, exit codes", () => {
  it("accepts unix:// and tcp:// addresses and refuses the rest by name", () => {
    expect(grpcTarget("unix:///run/buildkit/buildkitd.sock")).toBe("unix:///run/buildkit/buildkitd.sock");
    expect(grpcTarget("tcp://buildkitd:1234")).toBe("buildkitd:1234");
    for (const bad of ["buildkitd:1234", "unix://relative.sock", "tcp://host", "docker-container://buildx_buildkit_default"]) {
      expect(() => grpcTarget(bad)).toThrow(expect.objectContaining({ code: "BUILDKIT_BAD_ADDRESS" }));
    }
  });

  it("parses daemon versions; development builds are unknown", () => {
    expect(parseBuildkitVersion("v0.11.6")).toEqual([0, 11, 6]);
    expect(parseBuildkitVersion("0.12.0-rc1")).toEqual([0, 12, 0]);
    expect(parseBuildkitVersion("0.0.0+unknown")).toBeUndefined();
    expect(parseBuildkitVersion("devel")).toBeUndefined();
  });

  it("reads the exit code from the daemon's failure message", () => {
    expect(exitCodeOf('process "/bin/sh -c exit 3" did not complete successfully: exit code: 3')).toBe(3);
    expect(exitCodeOf("failed to compute cache key")).toBeUndefined();
  });
});

describe("the daemon's layer entries", () => {
  const entry = (name: string, type: TarEntry["header"]["type"], extra: Partial<TarEntry["header"]> = {}): TarEntry => ({
    header: { name, type, flag: "", mode: 0o40755, uid: 0, gid: 0, size: 0, mtime: new Date(0), linkname: "", uname: "", gname: "", devmajor: 0, devminor: 0, pax: new Map(), ...extra },
    body: (async function* () {})(),
    takeBuffered: () => undefined,
  });

  it("keeps every entry as written, the runtime's /dev, /proc and /sys mount points too (BuildKit's image has them); drops only the root", () => {
    expect(toLayerEntry(entry("./", "directory"))).toBeUndefined();
    for (const d of ["proc/", "dev", "./sys/"]) expect(toLayerEntry(entry(d, "directory"))).toMatchObject({ path: d.replace(/^\.\//, "").replace(/\/$/, ""), type: "directory", mode: 0o755 });
    expect(toLayerEntry(entry("dev", "file", { size: 0 }))?.path).toBe("dev");
    expect(toLayerEntry(entry("srv/proc/", "directory"))?.path).toBe("srv/proc");
    const wh = toLayerEntry(entry("./etc/.wh.motd", "file", { mode: 0o100000 }))!;
    expect([wh.path, wh.type, wh.mode]).toEqual(["etc/.wh.motd", "file", 0]);
    const hl = toLayerEntry(entry("a/b", "link", { linkname: "./a/c" }))!;
    expect([hl.type, hl.linkname]).toEqual(["hardlink", "a/c"]);
    const x = toLayerEntry(entry("bin/ping", "file", { mode: 0o100755, pax: new Map([["SCHILY.xattr.security.capability", Buffer.from([1, 2])]]) }))!;
    expect(x.xattrs).toEqual({ "security.capability": Buffer.from([1, 2]) });
  });
});

describe("executor flags", () => {
  const io = () => captureIO().io;
  const parse = (args: string[]) => parseFlags(args, [...EXECUTOR_FLAGS, { names: ["cache-repo"], type: "string" }]);

  it("bwrap by default; buildkit flags without --executor buildkit are refused", () => {
    expect(executorFrom(parse([]), io())).toBeUndefined();
    expect(() => executorFrom(parse(["--buildkit-addr", "tcp://x:1"]), io())).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE" }));
    expect(() => executorFrom(parse(["--executor", "docker"]), io())).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE" }));
  });

  it("--executor buildkit needs a staging repository (or the cache repo) without a tag", () => {
    expect(() => executorFrom(parse(["--executor", "buildkit"]), io())).toThrow(expect.objectContaining({ code: "USAGE_MISSING_ARGUMENT" }));
    expect(executorFrom(parse(["--executor", "buildkit", "--cache-repo", "r.example/cache"]), io())).toBeInstanceOf(BuildkitExecutor);
    expect(() => executorFrom(parse(["--executor", "buildkit", "--buildkit-staging-repo", "r.example/s:tag"]), io())).toThrow(
      expect.objectContaining({ code: "BUILDKIT_STAGING_REPO_INVALID" }),
    );
  });
});

describe("an unreachable daemon", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-bk-unit-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("fails with BUILDKIT_UNREACHABLE, and the executor reports itself unavailable with the reason", async () => {
    const address = `unix://${join(dir, "no-daemon.sock")}`;
    const client = await BuildkitClient.connect({ address });
    try {
      await expect(client.listWorkers()).rejects.toMatchObject({ code: "BUILDKIT_UNREACHABLE", retryable: true });
      expect(client.calls).toBe(1);
    } finally {
      client.close();
    }
    const ex = new BuildkitExecutor({ address, stagingRepo: "127.0.0.1:1/staging" });
    try {
      const a = await ex.available();
      expect(a.ok).toBe(false);
      expect(a.reason).toContain(address);
    } finally {
      ex.close();
    }
  });

  it("an already aborted signal makes no call", async () => {
    const client = await BuildkitClient.connect({ address: `unix://${join(dir, "x.sock")}` });
    try {
      const ac = new AbortController();
      ac.abort();
      await expect(client.info(ac.signal)).rejects.toMatchObject({ code: "BUILDKIT_ABORTED" });
      expect(client.calls).toBe(0);
    } finally {
      client.close();
    }
  });
});

describe("one RUN step on the BuildKit executor, without a daemon", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-bk-run-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const state: StageState = { platform: { os: "linux", architecture: "amd64" }, config: { User: "app" }, layers: [], history: [], args: {}, baseName: "scratch" };
  const spec = (extra: Partial<BuildkitStepSpec> = {}, secrets = new Map<string, Buffer>()): BuildkitStepSpec => ({
    state,
    args: ["/bin/sh", "-c", "true"],
    env: ["A=1"],
    cwd: "/src",
    network: "default",
    privileged: false,
    description: "RUN true",
    ctx: { content: undefined as never, registry: undefined as never, secrets, emit: () => {} },
    ...extra,
  });
  const secret = { type: "secret", id: "token", required: true, mode: 0o400, uid: 0, gid: 0 } as const;

  it("refuses what it cannot do by name, located through the step's locate, before the daemon is asked", async () => {
    const ex = new BuildkitExecutor({ address: `unix://${join(dir, "none.sock")}`, stagingRepo: "127.0.0.1:1/staging" });
    const located: string[] = [];
    const locate = (e: OcibuildError) => {
      located.push(e.code);
      return new OcibuildError(e.code, `Dockerfile:2: ${e.message}`, { hint: e.hint });
    };
    try {
      const cases: [Partial<BuildkitStepSpec>, string, RegExp][] = [
        [{ mounts: [{ type: "bind", target: "/src" }] }, "BUILD_UNSUPPORTED", /^Dockerfile:2: RUN --mount=type=bind is not supported with the buildkit executor yet/],
        [{ mounts: [{ type: "ssh", target: "/run/ssh" }] }, "BUILD_UNSUPPORTED", /--mount=type=ssh/],
        [{ privileged: true }, "BUILD_UNSUPPORTED", /RUN --security=insecure is not supported/],
        [{ script: { path: "/dev/pipes/EOT", content: "#!/bin/sh\n" } }, "BUILD_UNSUPPORTED", /a RUN heredoc with a #! line/],
        [{ mounts: [secret] }, "BUILDKIT_SECRET_MISSING", /^Dockerfile:2: RUN --mount=type=secret,id=token is required/],
        [{ mounts: [{ type: "cache", target: "/c", id: "c", sharing: "shared", from: "other", source: "/", mode: 0o755, uid: 0, gid: 0, readonly: false }] }, "BUILDKIT_MOUNT_UNSUPPORTED", /type=cache with from/],
      ];
      for (const [extra, code, message] of cases) {
        await expect(ex.run(spec({ ...extra, locate }))).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
      }
      expect(located).toEqual(cases.map(([, code]) => code));
      // Without locate, the error as it is.
      await expect(ex.run(spec({ privileged: true }))).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED", message: expect.stringMatching(/^RUN --security/) });
      expect(ex.calls).toBe(0);
      // What it can do gets as far as the daemon, which is not there.
      await expect(ex.run(spec({ mounts: [secret] }, new Map([["token", Buffer.from("s")]])))).rejects.toMatchObject({ code: "BUILDKIT_UNREACHABLE" });
      expect(ex.calls).toBeGreaterThan(0);
    } finally {
      ex.close();
    }
  });

  it("the step's LLB: the stage's user, PATH added when missing, and a cache mount makes the op unique instead of ignoring the daemon's cache", () => {
    const opOf = (bytes: Buffer) => sub(sub(bytes, 1)[0]!, 2)[0]!;
    const plain = stepDefinition(spec(), undefined, llbMounts([], new Map()));
    const meta = sub(opOf(plain.bytes), 1)[0]!;
    expect(text(meta, 2)).toEqual(["A=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    expect(text(meta, 4)).toEqual(["app"]);
    expect(fields(opOf(plain.bytes)).some(([k]) => k === 3)).toBe(false); // the default network is the daemon's sandbox
    const ignoresCache = (bytes: Buffer) => fields(sub(sub(bytes, 2)[0]!, 2)[0]!).some(([k, v]) => k === 1 && v === 1);
    expect(ignoresCache(plain.bytes)).toBe(true);
    expect(text(sub(opOf(stepDefinition(spec({ env: ["PATH=/bin"] }), undefined, llbMounts([], new Map())).bytes), 1)[0]!, 2)).toEqual(["PATH=/bin"]);

    const cache = llbMounts([{ type: "cache", target: "/c", id: "c", sharing: "locked", source: "/", mode: 0o755, uid: 0, gid: 0, readonly: false }], new Map());
    const a = stepDefinition(spec(), undefined, cache);
    const b = stepDefinition(spec(), undefined, cache);
    expect(ignoresCache(a.bytes)).toBe(false);
    // Root, the cache, and the nonce: an optional secret nobody serves, new for each step.
    const mounts = sub(opOf(a.bytes), 2);
    expect(mounts).toHaveLength(3);
    expect(fields(mounts[2]!).find(([k]) => k === 6)).toEqual([6, 1]);
    expect(a.execDigest).not.toBe(b.execDigest);
  });

  it("follows the Status stream: the command's output and tail, the daemon's own steps and errors logged once", () => {
    const out: string[] = [];
    const logs: string[] = [];
    const f = new StatusFollower("sha256:exec", (stream, chunk) => out.push(`${stream}:${chunk.toString()}`), (m) => logs.push(m));
    const status = (s: Partial<StatusResponse>): StatusResponse => ({ vertexes: [], logs: [], warnings: [], ...s }) as StatusResponse;
    const pull = { digest: "sha256:pull", name: "pulling input", started: new Date(1), cached: false } as StatusResponse["vertexes"][number];
    const exec = { digest: "sha256:exec", name: "RUN true", started: new Date(1), cached: false } as StatusResponse["vertexes"][number];
    f.onStatus(status({ vertexes: [pull, exec] }));
    f.onStatus(status({ vertexes: [pull, { ...exec, error: "exit code: 1" }], logs: [{ vertex: "sha256:exec", timestamp: new Date(2), stream: 1, msg: Buffer.from("hello\n") }] }));
    f.onStatus(status({ vertexes: [{ ...pull, error: "gone" }, { ...pull, error: "gone" }], logs: [{ vertex: "sha256:exec", timestamp: new Date(3), stream: 2, msg: Buffer.from("oops\n") }, { vertex: "sha256:exec", timestamp: new Date(3), stream: 1, msg: Buffer.alloc(0) }], warnings: [{ short: "deprecated" } as StatusResponse["warnings"][number]] }));
    expect(out).toEqual(["stdout:hello\n", "stderr:oops\n"]);
    expect(logs).toEqual(["buildkit: pulling input", "buildkit: pulling input: gone", "buildkit warning: deprecated"]);
    expect(f.tail.toString()).toBe("hello\noops");
  });

  it("the daemon's result must be the input's layers and at most one more", () => {
    const input = ["sha256:a", "sha256:b"];
    expect(newLayerIndex(input, { ref: "r", layers: 3, diffIds: [...input, "sha256:c"] })).toBe(2);
    expect(newLayerIndex(input, { ref: "r", layers: 2, diffIds: input })).toBeUndefined();
    expect(newLayerIndex([], { ref: "r", layers: 1, diffIds: ["sha256:c"] })).toBe(0);
    for (const diffIds of [["sha256:a", "sha256:x", "sha256:c"], ["sha256:a"], [...input, "sha256:c", "sha256:d"]]) {
      expect(() => newLayerIndex(input, { ref: "reg/s@sha256:1", layers: diffIds.length, diffIds })).toThrow(
        expect.objectContaining({ code: "BUILDKIT_RESULT_MISMATCH", message: expect.stringContaining("reg/s@sha256:1") }),
      );
    }
    expect(() => newLayerIndex(input, { ref: "r", layers: 2, diffIds: [...input, "sha256:c"] })).toThrow(expect.objectContaining({ code: "BUILDKIT_RESULT_MISMATCH" }));
  });
});
