/**
 * RUN --mount=type=cache bookkeeping (CacheMounts, one per build): directories by id
 * and platform, sharing=private instances, and sharing=locked locks within a build
 * and, through the lock file, across builds and processes.
 */
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CacheMounts } from "../../src/builder/cache-mounts.js";

const amd64 = { os: "linux", architecture: "amd64" };
const arm64 = { os: "linux", architecture: "arm64" };

describe("CacheMounts", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-cache-mounts-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps one directory per id and platform under its own directory", () => {
    const m = new CacheMounts(join(dir, "mounts"));
    expect(m.dirFor("pip", amd64)).toBe(m.dirFor("pip", amd64));
    expect(m.dirFor("pip", amd64)).not.toBe(m.dirFor("pip", arm64));
    expect(m.dirFor("pip", amd64)).not.toBe(m.dirFor("npm", amd64));
    expect(m.dirFor("pip", amd64).startsWith(join(dir, "mounts") + "/")).toBe(true);
  });

  it("sharing=private: a second concurrent user gets its own instance, and the directory is free again once released", () => {
    const m = new CacheMounts(join(dir, "mounts"));
    const d = m.dirFor("priv", amd64);
    const a = m.claimPrivate(d);
    const b = m.claimPrivate(d);
    expect(a.dir).toBe(d);
    expect(b.dir).toBe(`${d}-private-1`);
    b.release();
    a.release();
    expect(m.claimPrivate(d).dir).toBe(d);
    // Another build's bookkeeping is its own.
    expect(new CacheMounts(join(dir, "mounts")).claimPrivate(d).dir).toBe(d);
  });

  it("sharing=locked: users within a build and across builds take turns, and the lock file goes with the release", async () => {
    const d = new CacheMounts(join(dir, "mounts")).dirFor("locked", amd64);
    const order: string[] = [];
    const hold = async (m: CacheMounts, name: string) => {
      const release = await m.lock(d);
      order.push(`start-${name}`);
      await new Promise((r) => setTimeout(r, 150));
      order.push(`end-${name}`);
      await release();
    };
    const one = new CacheMounts(join(dir, "mounts"));
    await Promise.all([hold(one, "a"), hold(one, "b"), hold(new CacheMounts(join(dir, "mounts")), "c")]);
    expect(order).toHaveLength(6);
    for (let i = 0; i < 6; i += 2) expect(order[i + 1]).toBe(order[i]!.replace("start", "end"));
    await expect(stat(`${d}.lock`)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("a lock file left by a dead process is taken over; an aborted wait gives up", async () => {
    const m = new CacheMounts(join(dir, "mounts"));
    const d = m.dirFor("stale", amd64);
    await writeFile(`${d}.lock`, "999999999");
    const release = await m.lock(d);
    const ac = new AbortController();
    const waiting = new CacheMounts(join(dir, "mounts")).lock(d, ac.signal);
    setTimeout(() => ac.abort(), 50);
    await expect(waiting).rejects.toThrow();
    await release();
    // The aborted waiter left nothing behind: the lock can be taken again at once.
    await (await m.lock(d))();
  });
});
