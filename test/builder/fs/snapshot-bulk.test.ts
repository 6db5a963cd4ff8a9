/**
 * A step that writes thousands of files: past snapshot-files.ts's threshold their
 * stat fields, xattrs and contents are read by worker threads, and the plainest are
 * packed there as whole tar entries. Whatever reads them, the entries and the layer's
 * bytes are those of comparing the whole tree on the main thread (copy mode), with
 * and without SOURCE_DATE_EPOCH, for every kind of file that takes another way: xattrs,
 * hardlinks (also to a rewritten lower file), a file over the one-read size and one over
 * the size the tar copies, long and non-ASCII names, ids over the octal fields, setuid
 * bits, sub-millisecond mtimes, empty files, symlinks and fifos.
 */
import { Writable } from "node:stream";
import { chown, link, lutimes, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
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

/** Many plain files, and one of every kind that is not packed (see the module comment). */
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
  const odd = join(m, "deps/odd");
  await mkdir(odd);
  await writeFile(join(odd, "tool"), "#!/bin/sh\n");
  expect(await setXattrs([{ path: join(odd, "tool"), name: "security.capability", value: cap }])).toEqual([]);
  await writeFile(join(odd, "noted"), "n");
  expect(await setXattrs([{ path: join(odd, "noted"), name: "user.note", value: Buffer.from("yes") }])).toEqual([]);
  await writeFile(join(odd, "a"), "linked");
  await link(join(odd, "a"), join(odd, "b"));
  await writeFile(join(m, "etc/conf"), "rewritten");
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
  // The two trees are written at different times: every mtime is set (a sub-millisecond
  // one to 5.9996 s, which Node rounds to 6000 ms, and a tar header says 6).
  for (const name of ["tool", "noted", "a", "big.bin", "mid.bin", `${"n".repeat(120)}.js`, "caf\u00e9.txt", "big-ids", "suid", "empty", "fifo"]) paths.push(join(odd, name));
  for (const p of [...paths, join(m, "etc/conf"), odd, join(m, "deps"), join(m, "etc")]) await utimes(p, 1_600_000_000.25, 1_600_000_000.25);
  await writeFile(join(odd, "late"), "late");
  await utimes(join(odd, "late"), 5.9996, 5.9996);
  await lutimes(join(odd, "sym"), 1_600_000_000.25, 1_600_000_000.25);
  await utimes(odd, 1_600_000_000.25, 1_600_000_000.25);
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
  });
});
