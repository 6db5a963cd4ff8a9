import { describe, expect, it } from "vitest";
import { runProcess } from "../src/process.js";

describe("runProcess", () => {
  it("resolves with the exit status and both streams, a failing status included", async () => {
    const r = await runProcess("sh", ["-c", "printf out; printf 'err\\n' >&2; exit 3"]);
    expect(r).toEqual({ code: 3, signal: null, stdout: "out", stderr: "err\n" });
  });

  it("reports the signal that ended the child", async () => {
    const r = await runProcess("sh", ["-c", "kill -TERM $$"]);
    expect(r.code).toBeNull();
    expect(r.signal).toBe("SIGTERM");
  });

  it("writes input to stdin and closes it; without input stdin is empty", async () => {
    expect((await runProcess("cat", [], { input: "héllo\n" })).stdout).toBe("héllo\n");
    expect((await runProcess("cat", [])).stdout).toBe("");
  });

  it("ignores a child that exits without reading its input", async () => {
    const r = await runProcess("true", [], { input: Buffer.alloc(4 * 1024 * 1024) });
    expect(r.code).toBe(0);
  });

  it("passes cwd and env", async () => {
    const r = await runProcess("sh", ["-c", 'pwd; echo "$X"'], { cwd: "/tmp", env: { X: "y", PATH: process.env.PATH } });
    expect(r.stdout).toBe("/tmp\ny\n");
  });

  it("rejects when the program cannot be started", async () => {
    await expect(runProcess("/nonexistent/ocibuild-no-such-program", [])).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("kills the child and rejects with the AbortError when aborted", async () => {
    const ac = new AbortController();
    const started = Date.now();
    const p = runProcess("sleep", ["30"], { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ name: "AbortError" });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("keeps only maxOutput bytes of each stream but reads the program to its end", async () => {
    const r = await runProcess("sh", ["-c", "head -c 1000000 /dev/zero | tr '\\0' a; head -c 500 /dev/zero | tr '\\0' b >&2; exit 7"], { maxOutput: 100 });
    expect(r.stdout).toBe("a".repeat(100));
    expect(r.stderr).toBe("b".repeat(100));
    expect(r.code).toBe(7);
  });

  it("keeps 1 MiB of a stream by default", async () => {
    const r = await runProcess("sh", ["-c", "head -c 3000000 /dev/zero | tr '\\0' a"]);
    expect(r.stdout.length).toBe(1024 * 1024);
    expect(r.code).toBe(0);
  });
});
