import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { mountRoot } from "../../../src/builder/fs/overlay.js";
import { canOverlay } from "../../../testdata/builder/fixtures.js";

async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p.startsWith(dir));
}

describe.skipIf(!canOverlay())("mountRoot and cancellation (needs root and overlayfs)", () => {
  let base: string;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-abort-"));
    await mkdir(join(base, "lower"));
    await writeFile(join(base, "lower", "f"), "f");
  });
  afterEach(async () => {
    expect(await mountsUnder(base)).toEqual([]);
    await rm(base, { recursive: true, force: true });
  });

  it("an already-aborted signal fails with ROOTFS_ABORTED before anything is mounted", async () => {
    const ac = new AbortController();
    ac.abort();
    const e = await mountRoot([join(base, "lower")], join(base, "s"), { signal: ac.signal }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OcibuildError);
    expect((e as OcibuildError).code).toBe("ROOTFS_ABORTED");
  });

  it("an abort at any point either completes the mount (caller unmounts) or fails with ROOTFS_ABORTED leaving nothing mounted", async () => {
    const outcomes = new Set<string>();
    for (let delay = 0; delay < 24; delay++) {
      const ac = new AbortController();
      const p = mountRoot([join(base, "lower")], join(base, `s${delay}`), { signal: ac.signal });
      // Abort after a varying number of event-loop turns, so it lands at different stages.
      for (let i = 0; i < delay; i++) await new Promise((r) => setImmediate(r));
      ac.abort();
      try {
        const root = await p;
        outcomes.add("mounted");
        await root.unmount();
      } catch (e) {
        expect(e).toBeInstanceOf(OcibuildError);
        expect((e as OcibuildError).code).toBe("ROOTFS_ABORTED");
        outcomes.add("aborted");
      }
      expect(await mountsUnder(base)).toEqual([]);
    }
    expect(outcomes.has("aborted")).toBe(true);
  });
});

describe.skipIf(!canOverlay())("mountRoot's overlay options (needs root and overlayfs)", () => {
  it("mounts volatile where the kernel knows it (no sync of the cache's filesystem at each unmount), and unmounts cleanly", async () => {
    const base = await mkdtemp(join(tmpdir(), "ocibuild-volatile-"));
    try {
      await mkdir(join(base, "lower"));
      await writeFile(join(base, "lower", "f"), "f");
      const root = await mountRoot([join(base, "lower")], join(base, "s"));
      try {
        expect(root.mode).toBe("overlay");
        const line = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").find((l) => l.split(" ")[4] === root.merged) ?? "";
        const [major, minor] = (await readFile("/proc/sys/kernel/osrelease", "utf8")).split(".").map(Number);
        // overlayfs learnt `volatile` in Linux 5.10.
        if (major! > 5 || (major === 5 && minor! >= 10)) expect(line).toMatch(/[ ,](fsync=)?volatile(,|$)/); // shown as fsync=volatile by newer kernels
        await writeFile(join(root.merged, "g"), "g");
        expect(await readFile(join(root.merged, "f"), "utf8")).toBe("f");
      } finally {
        await root.unmount();
      }
      expect(await readFile(join(base, "s", "upper", "g"), "utf8")).toBe("g");
      expect(await mountsUnder(base)).toEqual([]);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
