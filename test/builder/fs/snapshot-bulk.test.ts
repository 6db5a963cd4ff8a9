/**
 * A step that writes thousands of files: past snapshot-files.ts's threshold their
 * stat fields, xattrs and contents are read by worker threads, and the plainest are
 * packed there as whole tar entries; the directories the walk meets after it are read
 * whole by them (snapshot-trees.ts). Whatever reads them, the entries and the layer's
 * bytes are those of comparing the whole tree on the main thread (copy mode), with
 * and without SOURCE_DATE_EPOCH, for every kind of file that takes another way: xattrs,
 * hardlinks (also to a rewritten lower file), a file over the one-read size and one over
 * the size the tar copies, long and non-ASCII names, ids over the octal fields, setuid
 * bits, sub-millisecond mtimes, empty files, symlinks and fifos.
 */
import { Writable } from "node:stream";
import { chmod, chown, link, lutimes, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { FileReaders, type TreeBatch } from "../../../src/builder/fs/file-readers.js";
import { mountRoot, type MountedRoot } from "../../../src/builder/fs/overlay.js";
import { snapshotBatches, snapshotChanges } from "../../../src/builder/fs/snapshot.js";
import { mknod, setXattrs } from "../../../src/builder/fs/native.js";
import { writeLayer, type LayerEntry, type TarSegment } from "../../../src/oci/layer.js";
import { canOverlay } from "../../../testdata/builder/fixtures.js";

const FILES = 2600;
const cap = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // cap_net_bind_service, permitted

async function makeLower(base: string): Promise<string[]> {
  const l0 = join(base, "l0");
  await mkdir(join(l0, "etc"), { recursive: true });
  await writeFile(join(l0, "etc/conf"), "lower");
  return [l0];
}

const WHEN = 1_600_000_000.25;

/**
 * One of every kind that is not packed (see the module comment), in `odd`; its paths
 * (their mtimes are set by the caller).
 */
async function oddKinds(m: string, odd: string): Promise<string[]> {
  await mkdir(odd, { recursive: true });
  await writeFile(join(odd, "tool"), "#!/bin/sh\n");
  expect(await setXattrs([{ path: join(odd, "tool"), name: "security.capability", value: cap }])).toEqual([]);
  await writeFile(join(odd, "noted"), "n");
  expect(await setXattrs([{ path: join(odd, "noted"), name: "user.note", value: Buffer.from("yes") }])).toEqual([]);
  await writeFile(join(odd, "a"), "linked");
  await link(join(odd, "a"), join(odd, "b"));
  await link(join(m, "etc/conf"), join(odd, "conf-link"));
  await writeFile(join(odd, "big.bin"), Buffer.alloc(300 * 1024, 7));
  // Read by a worker, not packed (an xattr), and over the size the tar copies: passed on as it is.
  await writeFile(join(odd, "mid.bin"), Buffer.alloc(100 * 1024, 9));
  expect(await setXattrs([{ path: join(odd, "mid.bin"), name: "user.size", value: Buffer.from("mid") }])).toEqual([]);
  await writeFile(join(odd, `${"n".repeat(120)}.js`), "long");
  await writeFile(join(odd, "caf\u00e9.txt"), "accent");
  await writeFile(join(odd, "big-ids"), "ids");
  await chown(join(odd, "big-ids"), 3_000_000, 3_000_001);
  await writeFile(join(odd, "suid"), "s", { mode: 0o4755 });
  await writeFile(join(odd, "empty"), "");
  await symlink("a", join(odd, "sym"));
  await mknod(join(odd, "fifo"), "fifo", 0o644);
  // A sub-millisecond mtime: 5.9996 s, which Node rounds to 6000 ms, and a tar header says 6.
  await writeFile(join(odd, "late"), "late");
  return ["tool", "noted", "a", "big.bin", "mid.bin", `${"n".repeat(120)}.js`, "caf\u00e9.txt", "big-ids", "suid", "empty", "fifo"].map((n) => join(odd, n));
}

/**
 * Many plain files, and the odd kinds twice: in deps/odd, listed before the walk has
 * met BULK_MIN files, and in deps/zz, a subtree it leaves whole to the workers, with
 * directories of their own kinds (nested, empty, with an xattr, sticky) and a hardlink
 * to a file listed before it.
 */
async function write(m: string): Promise<void> {
  const paths: string[] = [];
  for (let d = 0; d < FILES / 100; d++) {
    await mkdir(join(m, `deps/p${d}`), { recursive: true });
    paths.push(join(m, `deps/p${d}`));
    for (let f = 0; f < 100; f++) {
      await writeFile(join(m, `deps/p${d}/f${f}.js`), `module.exports = ${d * 100 + f};\n`);
      paths.push(join(m, `deps/p${d}/f${f}.js`));
    }
  }
  await writeFile(join(m, "etc/conf"), "rewritten");
  const zz = join(m, "deps/zz");
  const odds = [join(m, "deps/odd"), join(zz, "odd")];
  for (const odd of odds) paths.push(...(await oddKinds(m, odd)));
  await mkdir(join(zz, "n1/n2"), { recursive: true });
  await writeFile(join(zz, "n1/n2/deep.js"), "deep");
  await mkdir(join(zz, "void"));
  await mkdir(join(zz, "xdir"));
  expect(await setXattrs([{ path: join(zz, "xdir"), name: "user.note", value: Buffer.from("dir") }])).toEqual([]);
  await mkdir(join(zz, "sticky"), { mode: 0o1777 });
  await chmod(join(zz, "sticky"), 0o1777);
  await link(join(m, "deps/odd/a"), join(zz, "to-odd-a"));
  await symlink("n1", join(zz, "dir-link"));
  paths.push(...["n1", "n1/n2", "n1/n2/deep.js", "void", "xdir", "sticky", "to-odd-a", "odd", ""].map((n) => join(zz, n)));
  for (const p of [...paths, join(m, "etc/conf"), ...odds, join(m, "deps"), join(m, "etc")]) await utimes(p, WHEN, WHEN);
  for (const odd of odds) {
    await utimes(join(odd, "late"), 5.9996, 5.9996);
    await lutimes(join(odd, "sym"), WHEN, WHEN);
    await utimes(odd, WHEN, WHEN);
  }
  await lutimes(join(zz, "dir-link"), WHEN, WHEN);
}

async function digest(entries: AsyncIterable<LayerEntry | (LayerEntry | TarSegment)[]>, sourceDateEpoch?: number): Promise<string> {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  return (await writeLayer(entries, sink, { sourceDateEpoch })).diffId;
}

// On one core no workers start: the files are read on the main thread, and nothing here is packed.
describe.skipIf(!canOverlay() || availableParallelism() < 2)("a snapshot of thousands of new files (needs root, overlayfs and two cores)", () => {
  let base: string;
  const mounted: MountedRoot[] = [];
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-bulk-"));
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await m.unmount();
    await rm(base, { recursive: true, force: true });
  });

  it("gives copy mode's entries and layer bytes, with files packed by the workers", { timeout: 60_000 }, async () => {
    // Every subtree the workers are asked to read whole, and how many entries each answer held.
    const trees: { rel: string; count: number }[] = [];
    const readTree = FileReaders.prototype.readTree;
    const spy = vi.spyOn(FileReaders.prototype, "readTree").mockImplementation(async function (this: FileReaders, base: string, rel: string, pack) {
      const t = { rel, count: -1 };
      if (!trees.some((x) => x.rel === rel)) trees.push(t);
      const b: TreeBatch | undefined = await readTree.call(this, base, rel, pack);
      t.count = b?.count ?? -1;
      return b;
    });
    onTestFinished(() => spy.mockRestore());
    const lowers = await makeLower(base);
    const overlay = await mountRoot(lowers, join(base, "overlay"));
    const copy = await mountRoot(lowers, join(base, "copy"), { forceCopy: true });
    mounted.push(overlay, copy);
    expect(overlay.mode).toBe("overlay");
    for (const r of [overlay, copy]) await write(r.merged);

    // The reference: every file read on the main thread (fileWorkers: false), whole tree compared (copy mode).
    const summary = async (root: MountedRoot, fileWorkers?: boolean) => {
      const out: string[] = [];
      for await (const e of snapshotChanges(root, lowers, { fileWorkers })) {
        const x = Object.entries(e.xattrs ?? {}).map(([k, v]) => `${k}=${v.toString("hex")}`);
        out.push([e.path, e.type, e.mode.toString(8), e.uid, e.gid, e.size ?? "", e.mtime.getTime(), e.linkname ?? "", ...x].join(" "));
      }
      return out;
    };
    const entries = await summary(overlay);
    expect(entries.length).toBeGreaterThan(FILES);
    expect(entries).toEqual(await summary(copy, false));
    expect(entries.some((l) => l.startsWith("deps/odd/b hardlink ") && l.endsWith(" deps/odd/a"))).toBe(true);
    expect(entries.some((l) => l.startsWith("etc/conf hardlink ") && l.endsWith(" deps/odd/conf-link"))).toBe(true);
    expect(entries.find((l) => l.startsWith("deps/odd/late "))!.split(" ")[6]).toBe("6000");
    // The subtree the workers read whole: its odd kinds as the walk's, and links across.
    expect(entries.some((l) => l.startsWith("deps/zz/odd/b hardlink ") && l.endsWith(" deps/zz/odd/a"))).toBe(true);
    expect(entries.some((l) => l.startsWith("deps/zz/to-odd-a hardlink ") && l.endsWith(" deps/odd/a"))).toBe(true);
    expect(entries.find((l) => l.startsWith("deps/zz/odd/late "))!.split(" ")[6]).toBe("6000");
    expect(entries.find((l) => l.startsWith("deps/zz/xdir "))).toMatch(/ user\.note=646972$/);
    expect(entries.find((l) => l.startsWith("deps/zz/sticky "))).toMatch(/^deps\/zz\/sticky directory 1777 /);
    expect(entries.find((l) => l.startsWith("deps/zz/dir-link "))).toMatch(/ symlink 777 .* n1$/);

    for (const epoch of [undefined, 1000]) {
      const segments: TarSegment[] = [];
      const batches = (async function* () {
        for await (const list of snapshotBatches(overlay, lowers, { pack: { sourceDateEpoch: epoch } })) {
          for (const e of list) if ("tar" in e) segments.push(e);
          yield list;
        }
      })();
      const packed = await digest(batches, epoch);
      // The workers packed (nearly) every plain file; the odd ones came as entries.
      expect(segments.reduce((n, s) => n + s.entries, 0)).toBeGreaterThanOrEqual(FILES);
      expect(packed).toBe(await digest(snapshotChanges(copy, lowers, { fileWorkers: false }), epoch));
    }
    // Past BULK_MIN files the walk left subtrees whole to the workers, asked for in its
    // order. In byte order deps/p3 is the 20th directory of 100 files (after odd, p0, p1,
    // p10-p19, p2, p20-p25), where the walk lists its 2,000th file: p4-p9 and zz come after.
    expect(trees.map((t) => t.rel)).toEqual([...[4, 5, 6, 7, 8, 9].map((d) => `deps/p${d}`), "deps/zz"]);
    expect(trees.every((t) => t.count > 0)).toBe(true);
    expect(trees.at(-1)!.count).toBeGreaterThan(20);

    // A subtree the workers cannot read (they failed, or exited) is read here, to the same bytes.
    const failing = vi.spyOn(FileReaders.prototype, "readTree").mockResolvedValue(undefined);
    try {
      expect(await summary(overlay)).toEqual(entries);
      expect(await digest(snapshotBatches(overlay, lowers, { pack: { sourceDateEpoch: 1000 } }), 1000)).toBe(await digest(snapshotChanges(copy, lowers, { fileWorkers: false }), 1000));
      expect(failing).toHaveBeenCalled();
    } finally {
      failing.mockRestore();
    }
  });
});
