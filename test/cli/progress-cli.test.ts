/**
 * `--progress` through `main` on a real (FROM scratch, no registry) build:
 * auto picks the tty view when stderr is a terminal and plain lines when it is
 * not; json prints only valid events on stdout; quiet prints only the digest.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateEvent } from "../../src/builder/events.js";
import { main } from "../../src/cli/main.js";
import type { CliIO } from "../../src/cli/io.js";
import { isRoot } from "../helpers/tools.js";

function capture(tty: boolean) {
  const mk = () => {
    const s = Object.assign(new PassThrough(), tty ? { isTTY: true, columns: 100 } : {});
    let text = "";
    s.on("data", (c: Buffer) => (text += c.toString("utf8")));
    return { s, text: () => text };
  };
  const out = mk();
  const err = mk();
  const io: CliIO = { stdout: out.s, stderr: err.s, stdin: new PassThrough(), env: { PATH: process.env.PATH }, cwd: process.cwd() };
  return { io, stdout: out.text, stderr: err.text };
}

describe.skipIf(!isRoot)("--progress modes on a real build (needs root for overlay roots)", () => {
  let work: string;
  let ctx: string;
  const args = () => ["--no-push", "--cache-dir", join(work, "cache"), ctx];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-progress-"));
    ctx = join(work, "ctx");
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\nENV X=1\n");
    await writeFile(join(ctx, "a.txt"), "a\n");
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("auto on a terminal: the tty view, one finished line per step, then the summary on stdout", async () => {
    const c = capture(true);
    expect(await main(args(), c.io)).toBe(0);
    expect(c.stderr()).toContain("\x1b[");
    expect(c.stderr()).toMatch(/✔ \[0 1\/2\] COPY a\.txt \/a\.txt {2}\d+\.\ds/);
    expect(c.stderr()).toMatch(/✔ \[0 2\/2\] ENV X=1 {2}\d+\.\ds/);
    expect(c.stdout()).toMatch(/^digest: sha256:[a-f0-9]{64}$/m);
    expect(c.stdout()).toMatch(/^steps: 2, cached: \d\/2/m);
  });

  it("auto on a pipe: plain lines with step numbers and no escape sequences", async () => {
    const c = capture(false);
    expect(await main(args(), c.io)).toBe(0);
    expect(c.stderr()).not.toContain("\x1b[");
    expect(c.stderr()).toMatch(/^\[0 1\/2\] COPY a\.txt \/a\.txt$/m);
    expect(c.stderr()).toMatch(/^\[0 2\/2\] (DONE|CACHED) \d+\.\d\ds/m);
  });

  it("json: stdout holds only valid events, ending with the result", async () => {
    const c = capture(true);
    expect(await main(["--progress", "json", ...args()], c.io)).toBe(0);
    const lines = c.stdout().trim().split("\n").map((l) => JSON.parse(l));
    for (const e of lines) expect(validateEvent(e)).toEqual([]);
    expect(lines.map((e) => e.type).filter((t) => t.startsWith("step"))).toEqual(["step-start", "step-end", "step-start", "step-end"]);
    expect(lines[lines.length - 1].type).toBe("result");
    expect(c.stderr()).toBe("");
  });

  it("json on failure: an error event on stdout, error[CODE] on stderr, exit 1", async () => {
    const bad = join(work, "bad");
    await mkdir(bad, { recursive: true });
    await writeFile(join(bad, "Dockerfile"), "FROM scratch\nCOPY nothere /x\n");
    const c = capture(false);
    expect(await main(["--progress=json", "--no-push", "--cache-dir", join(work, "cache"), bad], c.io)).toBe(1);
    const lines = c.stdout().trim().split("\n").map((l) => JSON.parse(l));
    const last = lines[lines.length - 1];
    expect(validateEvent(last)).toEqual([]);
    expect(last).toMatchObject({ type: "error", code: "BUILD_COPY_SOURCE_NOT_FOUND" });
    expect(c.stderr()).toMatch(/^error\[BUILD_COPY_SOURCE_NOT_FOUND\]/m);
  });

  it("a rebuild: CACHED marks in the tty view and hits/time saved in the summary; --dry-run reports without building", async () => {
    const first = capture(false);
    expect(await main(args(), first.io)).toBe(0);
    const digest = /^digest: (sha256:[a-f0-9]{64})$/m.exec(first.stdout())![1]!;
    const c = capture(true);
    expect(await main(args(), c.io)).toBe(0);
    expect(c.stderr()).toMatch(/✔ \[0 1\/2\] COPY a\.txt \/a\.txt {2}CACHED/);
    expect(c.stdout()).toMatch(/^steps: 2, cached: 2\/2, time saved: \d+\.\ds, reused: /m);
    const d = capture(false);
    expect(await main(["--dry-run", "--digest-file", join(work, "never"), ...args()], d.io)).toBe(0);
    expect(d.stdout()).toContain("dry run: 2/2 steps would be cached, 0 rebuilt");
    expect(d.stdout()).toContain(`digest (everything cached): ${digest}`);
    await expect(import("node:fs/promises").then((f) => f.stat(join(work, "never")))).rejects.toThrow();
  });

  it("quiet: only the digest on stdout", async () => {
    const c = capture(true);
    expect(await main(["-q", ...args()], c.io)).toBe(0);
    expect(c.stdout()).toMatch(/^sha256:[a-f0-9]{64}\n$/);
    expect(c.stderr()).toBe("");
  });
});
