/**
 * bin/ocibuild as users run it (the command npm links into node_modules/.bin): a
 * fresh node process running the bundled CLI (dist/ocibuild.cjs) through its V8 code
 * cache. The bundle and its loader are
 * copied into a temporary tree so the cache files it writes can be watched; the
 * results are compared with the in-process CLI (src/), so the bundle cannot drift
 * from the modules it is made of.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "../helpers/tools.js";

const root = resolve(import.meta.dirname, "../..");
const bundle = join(root, "dist/ocibuild.cjs");
const exec = promisify(execFile);

async function runBin(binDir: string, args: string[], cwd = root, extraEnv: Record<string, string> = {}) {
  try {
    const r = await exec(join(binDir, "bin/ocibuild"), args, { cwd, env: { ...process.env, NO_COLOR: "1", ...extraEnv } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

let work: string;
beforeAll(async () => {
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run \`npm run build\` (npm test builds it through scripts/setup.sh)`);
  work = await mkdtemp(join(tmpdir(), "ocibuild-bin-"));
  await mkdir(join(work, "bin"));
  await mkdir(join(work, "dist/cli"), { recursive: true });
  await copyFile(join(root, "bin/ocibuild"), join(work, "bin/ocibuild"));
  await copyFile(join(root, "bin/ocibuild.cjs"), join(work, "bin/ocibuild.cjs"));
  await copyFile(join(root, "package.json"), join(work, "package.json"));
  // A stand-in for tsc's modules, older than the bundle: the loader must not use it.
  await writeFile(join(work, "dist/cli/main.js"), 'export async function main() { process.stdout.write("from the modules\\n"); return 0; }\n');
  await utimes(join(work, "dist/cli/main.js"), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
  await copyFile(bundle, join(work, "dist/ocibuild.cjs"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("bin/ocibuild runs the bundle", () => {
  it("prints what the in-process CLI prints, and exits with its codes", async () => {
    const dockerfile = join(root, "testdata/hello/Dockerfile");
    const viaBin = await runBin(work, ["parse", dockerfile]);
    const inProcess = await cli(["parse", dockerfile]);
    expect(viaBin.code).toBe(0);
    expect(viaBin.stdout).toBe(inProcess.stdout);
    expect(viaBin.stdout).not.toContain("from the modules");

    const missing = await runBin(work, ["parse", join(work, "no-such/Dockerfile")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("DOCKERFILE_NOT_FOUND");
    expect(missing.stderr).not.toMatch(/\n\s+at /); // no stack trace

    const usage = await runBin(work, ["build", "--no-such-flag", "."]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--no-such-flag");
  });

  it("runs through a symbolic link, as npm links it into node_modules/.bin", async () => {
    await mkdir(join(work, "node_modules/.bin"), { recursive: true });
    await symlink("../../bin/ocibuild", join(work, "node_modules/.bin/ocibuild"));
    const dockerfile = join(root, "testdata/hello/Dockerfile");
    const r = await exec(join(work, "node_modules/.bin/ocibuild"), ["parse", dockerfile], { cwd: tmpdir(), env: { ...process.env, NO_COLOR: "1" } });
    const want = (await cli(["parse", dockerfile])).stdout;
    expect(r.stdout).toBe(want);
    // Not a link (readlink is not run): through a linked directory, and by a bare name from its own directory.
    await symlink("bin", join(work, "linked-bin"));
    const env = { ...process.env, NO_COLOR: "1" };
    expect((await exec(join(work, "linked-bin/ocibuild"), ["parse", dockerfile], { cwd: tmpdir(), env })).stdout).toBe(want);
    expect((await exec("sh", ["ocibuild", "parse", dockerfile], { cwd: join(work, "bin"), env })).stdout).toBe(want);
  });

  it("starts Node without NODE_EXTRA_CA_CERTS (Node would parse it first; bin-tls.test.ts: the command still uses it)", async () => {
    const missingCa = join(work, "no-such-ca.pem");
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: missingCa };
    // Node itself loads the file while it starts, and warns when it cannot.
    expect((await exec(process.execPath, ["-e", "0"], { env })).stderr).toContain("extra certs");
    expect((await exec(process.execPath, [join(work, "bin/ocibuild.cjs"), "--version"], { env })).stderr).toContain("extra certs");
    const viaBin = await runBin(work, ["parse", join(root, "testdata/hello/Dockerfile")], root, { NODE_EXTRA_CA_CERTS: missingCa });
    expect(viaBin.code).toBe(0);
    expect(viaBin.stderr).toBe("");
  });

  it("a reader that goes away (| head) ends no command with a stack trace: it finishes with its own status", async () => {
    // A parse dump much larger than a pipe's buffer, read by a reader that takes one byte and leaves.
    const dockerfile = join(work, "Dockerfile.long");
    await writeFile(dockerfile, `FROM scratch\n${Array.from({ length: 4000 }, (_, i) => `ENV VARIABLE_NUMBER_${i}=value-${i}\n`).join("")}`);
    const script = `"$0" parse "$1" | head -c 1 >/dev/null; echo "status ${"$"}{PIPESTATUS[0]}" >&2`;
    const r = await exec("bash", ["-c", script, join(work, "bin/ocibuild"), dockerfile], { env: { ...process.env, NO_COLOR: "1" } });
    expect(r.stderr).toBe("status 0\n");
  });

  it("writes a code cache per command after a successful run, learns from the next runs and the 8th, and reuses it unchanged between", async () => {
    const cacheDir = join(work, "dist/.v8-cache");
    await rm(cacheDir, { recursive: true, force: true });
    const dockerfile = join(root, "testdata/hello/Dockerfile");
    expect((await runBin(work, ["parse", dockerfile])).code).toBe(0);
    const files = (await readdir(cacheDir)).filter((f) => f.endsWith(".bin"));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^parse-v\d+\.\d+\.\d+-/);
    const runs = () => readFile(join(cacheDir, `${files[0]!}.runs`), "utf8");
    expect(await runs()).toBe("1");
    const first = (await stat(join(cacheDir, files[0]!))).size;
    // The next runs learn: each writes the cache again with what it compiled besides
    // (--check validates every instruction, code the first run never compiled).
    expect((await runBin(work, ["parse", "--check", dockerfile])).code).toBe(0);
    expect(await runs()).toBe("2");
    expect((await stat(join(cacheDir, files[0]!))).size).toBeGreaterThan(first);
    for (const n of ["3", "4"]) {
      expect((await runBin(work, ["parse", dockerfile])).code).toBe(0);
      expect(await runs()).toBe(n);
    }
    // Then it is only read (V8 accepted it, so it is not rewritten), and the runs counted,
    // up to the 8th, which learns again: what parsing a Dockerfile of other constructs
    // compiles, first done in the runs after the first four, is in the cache from then on.
    const before = await stat(join(cacheDir, files[0]!));
    const bytes = await readFile(join(cacheDir, files[0]!));
    const other = join(work, "Dockerfile.other");
    await writeFile(other, "# syntax=docker/dockerfile:1\n# escape=`\nFROM alpine AS base\nONBUILD RUN echo hi\nRUN <<EOF\necho one\nEOF\nHEALTHCHECK --interval=5s CMD [\"true\"]\n");
    for (const n of ["5", "6", "7"]) {
      expect((await runBin(work, ["parse", other])).code).toBe(0);
      expect(await runs()).toBe(n);
    }
    const after = await stat(join(cacheDir, files[0]!));
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(await readFile(join(cacheDir, files[0]!))).toEqual(bytes);
    expect((await runBin(work, ["parse", other])).code).toBe(0);
    expect(await runs()).toBe("8");
    expect((await readFile(join(cacheDir, files[0]!))).length).toBeGreaterThan(bytes.length);
    // A failed run writes no cache for its command.
    expect((await runBin(work, ["inspect", "--no-such-flag"])).code).toBe(2);
    expect((await readdir(cacheDir)).filter((f) => f.startsWith("inspect-"))).toEqual([]);
    // A cache V8 refuses (corrupt here; a new Node in life) is replaced, and the run still works.
    await writeFile(join(cacheDir, files[0]!), Buffer.from("not a code cache"));
    const r = await runBin(work, ["parse", dockerfile]);
    expect(r.code).toBe(0);
    expect((await readFile(join(cacheDir, files[0]!))).length).toBeGreaterThan(1000);
  });

  it("ignores a bundle older than tsc's modules (a stale bundle after a plain tsc run)", async () => {
    const main = join(work, "dist/cli/main.js");
    await utimes(main, new Date(), new Date(Date.now() + 60_000));
    try {
      const r = await runBin(work, ["parse", join(root, "testdata/hello/Dockerfile")]);
      expect(r.stdout).toBe("from the modules\n");
    } finally {
      await utimes(main, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    }
  });
});
