/**
 * A path the user chose that cannot be written is the user's mistake, not a bug:
 * every output kind, every result file and the cache directory fail with a coded
 * error naming that path and the real errno (never INTERNAL, never a temp file's
 * name), before the build runs a step. Root ignores permission bits, so the
 * failures are made three ways: a path under a regular file (ENOTDIR, in-process),
 * a read-only bind mount in a private mount namespace (EROFS) and the CLI run as
 * nobody through setpriv (EACCES); the last two run bin/ocibuild (the bundle).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, have, isRoot } from "../helpers/tools.js";

const exec = promisify(execFile);
const bin = resolve(import.meta.dirname, "../../bin/ocibuild.cjs");
const bundled = existsSync(resolve(import.meta.dirname, "../../dist/ocibuild.cjs"));

let work: string;
const p = (...names: string[]) => join(work, ...names);
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-user-paths-"));
  await chmod(work, 0o755); // nobody (setpriv) reads the context
  await mkdir(p("ctx"));
  await writeFile(p("ctx", "Dockerfile"), "FROM scratch\nCOPY f /f\n");
  await writeFile(p("ctx", "f"), "f\n");
  await writeFile(p("file"), "a regular file\n");
  await mkdir(p("ro"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Each flag that writes a path, given the path to write. */
const OUTPUTS: [string, (path: string) => string[], string][] = [
  ["-o oci:DIR", (x) => ["-o", `oci:${x}`], "the OCI layout"],
  ["--oci-layout-path", (x) => ["--oci-layout-path", x], "the OCI layout"],
  ["-o oci-archive:FILE", (x) => ["-o", `oci-archive:${x}`], "the OCI archive"],
  ["-o docker-archive:FILE", (x) => ["-o", `docker-archive:${x}`], "the docker archive"],
  ["--tar-path", (x) => ["--tar-path", x], "the docker archive"],
  ["--digest-file", (x) => ["--digest-file", x], ""],
  ["--metadata-file", (x) => ["--metadata-file", x], ""],
  ["--iidfile", (x) => ["--iidfile", x], ""],
];

function expectPathError(stderr: string, code: string, what: string, path: string, errno: string) {
  // A plain user's build may first warn about its rootless mapping; the error is still a line of its own.
  expect(stderr).toMatch(new RegExp(`^error\\[${code}\\]: cannot (write|use) ${what}${what ? " " : ""}`, "m"));
  expect(stderr).toContain(`${path}: ${errno} (`);
  expect(stderr).not.toMatch(/INTERNAL|this is a bug|\.tmp-|ocibuild-tmp|\.layers-/);
  expect(stderr).not.toMatch(/\[0 \d\/\d\]/); // failed before the first step
}

describe("a path under a regular file (ENOTDIR)", () => {
  it.each(OUTPUTS)("%s", async (_flag, args, what) => {
    const path = p("file", "out");
    const r = await cli(["--no-push", "--progress=plain", "--cache-dir", p("cache"), ...args(path), p("ctx")]);
    expect(r.code).toBe(1);
    expectPathError(r.stderr, "OUTPUT_WRITE_FAILED", what, path, "ENOTDIR");
  });

  it("--cache-dir", async () => {
    const r = await cli(["--no-push", "--progress=plain", "--cache-dir", p("file", "cache"), p("ctx")]);
    expect(r.code).toBe(1);
    expectPathError(r.stderr, "CACHE_DIR_UNWRITABLE", "the cache directory", p("file", "cache"), "ENOTDIR");
  });

  it("a HOME where the default cache directory cannot be made: the build caches under the temp dir and says why", async () => {
    const r = await cli(["--no-push", "--progress=plain", p("ctx")], { env: { HOME: p("file") } });
    expect(r.stderr).toContain(`cannot create the cache directory ${p("file", ".cache", "ocibuild")} (ENOTDIR): this build caches in `);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
  });

  it("an archive path that is a directory (EISDIR)", async () => {
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-o", `docker-archive:${p("ro")}`, p("ctx")]);
    expectPathError(r.stderr, "OUTPUT_WRITE_FAILED", "the docker archive", p("ro"), "EISDIR");
  });
});

async function runBin(prefix: string[], args: string[], env: Record<string, string> = {}) {
  try {
    const r = await exec(prefix[0]!, [...prefix.slice(1), process.execPath, bin, ...args], { env: { PATH: process.env.PATH!, HOME: p("home"), ...env } });
    return { code: 0, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stderr: string };
    return { code: x.code, stderr: x.stderr };
  }
}

describe.skipIf(!isRoot || !have("unshare") || !bundled)("a read-only bind mount (EROFS; needs root, unshare and the bundle)", () => {
  /** Runs bin/ocibuild in a private mount namespace where p("ro") is mounted read-only. */
  const runReadOnly = (args: string[], env: Record<string, string> = {}) => {
    const ro = p("ro");
    return runBin(["unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind ${ro} ${ro} && mount -o remount,bind,ro ${ro} && exec "$@"`, "sh"], args, env);
  };

  it.each(OUTPUTS)("%s", async (_flag, args, what) => {
    const path = p("ro", "out");
    const r = await runReadOnly(["--no-push", "--progress=plain", "--cache-dir", p("cache"), ...args(path), p("ctx")]);
    expect(r.code).toBe(1);
    expectPathError(r.stderr, "OUTPUT_WRITE_FAILED", what, path, "EROFS");
  });

  it("--cache-dir and HOME", async () => {
    const a = await runReadOnly(["--no-push", "--cache-dir", p("ro", "cache"), p("ctx")]);
    expectPathError(a.stderr, "CACHE_DIR_UNWRITABLE", "the cache directory", p("ro", "cache"), "EROFS");
    // The default under a read-only HOME is not fatal: the temp dir takes the cache, with a warning.
    const b = await runReadOnly(["--no-push", p("ctx")], { HOME: p("ro") });
    expect(b.stderr).toContain(`cannot create the cache directory ${p("ro", ".cache", "ocibuild")} (EROFS): this build caches in `);
    expect(b.code).toBe(0);
    expect(await readdir(p("ro"))).toEqual([]);
  });
});

describe.skipIf(!isRoot || !have("setpriv") || !bundled)("the CLI run as nobody (EACCES; needs root, setpriv and the bundle)", () => {
  const asNobody = (args: string[], env: Record<string, string> = {}) => runBin(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"], args, env);

  beforeAll(async () => {
    await mkdir(p("rootonly"));
    await chmod(p("rootonly"), 0o755);
    await mkdir(p("nobody-cache"));
    await chmod(p("nobody-cache"), 0o777);
  });

  it("an output in a directory nobody may not write", async () => {
    const r = await asNobody(["--no-push", "--cache-dir", p("nobody-cache"), "-o", `oci-archive:${p("rootonly", "img.tar")}`, p("ctx")]);
    expect(r.code).toBe(1);
    expectPathError(r.stderr, "OUTPUT_WRITE_FAILED", "the OCI archive", p("rootonly", "img.tar"), "EACCES");
  });

  it("a HOME nobody may not write: the build caches under the temp dir and says why", async () => {
    const r = await asNobody(["--no-push", p("ctx")], { HOME: p("rootonly") });
    expect(r.stderr).toContain(`cannot create the cache directory ${p("rootonly", ".cache", "ocibuild")} (EACCES): this build caches in `);
    expect(r.stderr).not.toMatch(/error\[|INTERNAL/);
    expect(r.code).toBe(0);
  });
});
