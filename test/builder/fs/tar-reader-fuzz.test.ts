/**
 * A seeded, deterministic fuzz of the tar reader: a corpus of hand-made archives
 * (every entry type, PAX and global records, GNU long names and links), then
 * truncated, with random header bytes (checksum fixed up so the reader meets
 * them), with huge, negative and non-numeric fields, with every type flag, and
 * with random bytes anywhere. Every case must end in a coded error or in entries
 * that make sense, within a time limit per case and a memory limit (the reader
 * runs in a worker: test/helpers/tar-isolated.ts).
 */
import { describe, expect, it } from "vitest";
import { BLOCK, END, fileEntry, gnuLong, header, padded, paxHeader, paxRecord, withChecksum } from "../../helpers/tar-craft.js";
import { readTarIsolated, type ReadOutcome } from "../../helpers/tar-isolated.js";

/** mulberry32: a small seeded generator, so a failing case can be made again. */
function rng(seed: number): { int: (n: number) => number; pick: <T>(xs: readonly T[]) => T } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { int, pick: (xs) => xs[int(xs.length)]! };
}

const body = (n: number, c = "d") => c.repeat(n);

/** The valid archives the mutations start from, with the names and sizes they hold. */
function corpus(): { tar: Buffer; entries: [string, number][] }[] {
  const long = `${"p".repeat(120)}/${"q".repeat(60)}`;
  return [
    { tar: Buffer.concat([fileEntry("a", "hello"), fileEntry("b", body(513)), END]), entries: [["a", 5], ["b", 513]] },
    {
      tar: Buffer.concat([
        header({ name: "dir/", flag: "5" }), header({ name: "dir/l", flag: "2", linkname: "../a" }), fileEntry("dir/f", body(1024)),
        header({ name: "dir/h", flag: "1", linkname: "dir/f" }), header({ name: "c", flag: "3", devmajor: "0000001\0", devminor: "0000003\0" }),
        header({ name: "blk", flag: "4" }), header({ name: "p", flag: "6" }), fileEntry("cont", "x", { flag: "7" }), END,
      ]),
      entries: [["dir/", 0], ["dir/l", 0], ["dir/f", 1024], ["dir/h", 0], ["c", 0], ["blk", 0], ["p", 0], ["cont", 1]],
    },
    {
      tar: Buffer.concat([
        paxHeader({ comment: "global" }, "g"), paxHeader({ path: long, uid: "4000000", mtime: "1.5", "SCHILY.xattr.user.x": "v" }),
        fileEntry("short", "pax"), paxHeader({ linkpath: long }), header({ name: "ln", flag: "2" }), END,
      ]),
      entries: [[long, 3], ["ln", 0]],
    },
    {
      tar: Buffer.concat([gnuLong("L", long), fileEntry("trunc", "gnu"), gnuLong("K", long), gnuLong("L", `${long}2`), header({ name: "x", flag: "1" }), END]),
      entries: [[long, 3], [`${long}2`, 0]],
    },
    { tar: Buffer.concat([paxHeader({ size: "700" }), fileEntry("sized", body(700)), fileEntry("z", ""), END]), entries: [["sized", 700], ["z", 0]] },
  ];
}

/** Offsets of the header blocks of a valid archive (walking sizes as the reader does). */
function headerOffsets(tar: Buffer): number[] {
  const out: number[] = [];
  for (let off = 0; off + BLOCK <= tar.length; ) {
    const block = tar.subarray(off, off + BLOCK);
    if (block.every((b) => b === 0)) break;
    out.push(off);
    const size = parseInt(block.toString("latin1", 124, 135), 8) || 0;
    const flag = String.fromCharCode(block[156]!);
    const hasBody = ["0", "\0", "7", "x", "g", "L", "K"].includes(flag);
    off += BLOCK + (hasBody ? Math.ceil(size / BLOCK) * BLOCK : 0);
  }
  return out;
}

const NUMERIC_FIELDS: [number, number][] = [[100, 8], [108, 8], [116, 8], [124, 12], [136, 12], [329, 8], [337, 8]];
const NASTY_NUMBERS: Buffer[] = [
  Buffer.from([0x80, ...Array(11).fill(0xff)]), Buffer.from([0xff, ...Array(11).fill(0xff)]), Buffer.from([0xff, 0xff, 0xff, 0xfe]),
  Buffer.from("77777777777\0"), Buffer.from("-1\0"), Buffer.from("0.5\0"), Buffer.from("9\0"), Buffer.from("   \0"), Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1]),
];
const NASTY_PAX = ["0.5", "-1", "1e400", "99999999999999999999", "", "abc", "0x20", "18446744073709551616", "1.", "-0", " 1", "\u0000"];

function mutate(tar: Buffer, r: ReturnType<typeof rng>): Buffer {
  const out = Buffer.from(tar);
  const heads = headerOffsets(tar);
  const h = heads.length > 0 ? r.pick(heads) : 0;
  switch (r.int(6)) {
    case 0:
      return out.subarray(0, r.int(out.length));
    case 1: {
      for (let n = 1 + r.int(8); n > 0; n--) out[h + r.int(BLOCK)] = r.int(256);
      if (r.int(4) > 0) withChecksum(out.subarray(h, h + BLOCK));
      return out;
    }
    case 2: {
      const [at, width] = r.pick(NUMERIC_FIELDS);
      out.fill(0, h + at, h + at + width);
      r.pick(NASTY_NUMBERS).copy(out, h + at, 0, width);
      withChecksum(out.subarray(h, h + BLOCK));
      return out;
    }
    case 3: {
      const rec = paxHeader({ [r.pick(["size", "uid", "gid", "mtime", "path", "linkpath"])]: r.pick(NASTY_PAX) });
      return Buffer.concat([out.subarray(0, h), rec, out.subarray(h)]);
    }
    case 4: {
      // A PAX record whose length prefix lies.
      const rec = paxRecord("path", "liar");
      const lie = Buffer.concat([Buffer.from(String(r.pick([0, 1, 3, 9, 99, 123456]))), rec.subarray(rec.indexOf(0x20))]);
      const x = Buffer.concat([header({ name: "PaxHeaders/lie", flag: "x", size: lie.length }), padded(lie)]);
      return Buffer.concat([out.subarray(0, h), x, out.subarray(h)]);
    }
    default:
      for (let n = 1 + r.int(16); n > 0; n--) out[r.int(out.length)] = r.int(256);
      return out;
  }
}

/** What a successful outcome must satisfy whatever the input was. */
function expectSane(out: ReadOutcome, i: number): void {
  if (out.kind === "error") {
    expect([i, out.name, typeof out.code]).toEqual([i, "OcibuildError", "string"]);
    return;
  }
  for (const e of out.entries) {
    expect([i, Number.isSafeInteger(e.size) && e.size >= 0, Number.isSafeInteger(e.uid) && e.uid >= 0, Number.isFinite(e.mtime)]).toEqual([i, true, true, true]);
    if (e.body !== -1) expect([i, e.name, e.body]).toEqual([i, e.name, e.type === "file" ? e.size : 0]);
  }
}

describe("readTar fuzz (seeded)", () => {
  it("reads the unmutated corpus exactly", async () => {
    const base = corpus();
    const outs = await readTarIsolated(base.map((c) => c.tar));
    outs.forEach((out, i) => {
      expect(out.kind).toBe("ok");
      const got = (out as Extract<ReadOutcome, { kind: "ok" }>).entries.map((e) => [e.name, e.size]);
      expect(got).toEqual(base[i]!.entries);
    });
  });

  it("gives every type flag either an entry or a coded error", async () => {
    const cases = Array.from({ length: 256 }, (_, f) =>
      Buffer.concat([header({ name: "t", flag: String.fromCharCode(f), size: 600 }), padded(Buffer.from(body(600))), fileEntry("after", "ok"), END]),
    );
    const outs = await readTarIsolated(cases);
    outs.forEach((out, f) => {
      expectSane(out, f);
      // Metadata flags consume "t" as a record; every other flag is an entry followed by "after".
      if (out.kind === "ok" && !"xgLK".includes(String.fromCharCode(f))) expect(out.entries.map((e) => e.name)).toEqual(["t", "after"]);
    });
  });

  it.each([0, 7, 512])("ends every mutated archive in a coded error or sane entries (input in chunks of %i)", async (chunk) => {
    const r = rng(0x17 + chunk);
    const base = corpus();
    const cases = Array.from({ length: 600 }, () => mutate(r.pick(base).tar, r));
    const outs = await readTarIsolated(cases, { chunk, caseTimeoutMs: 5000, maxArrayBuffersMb: 64 });
    outs.forEach(expectSane);
    // The fuzz reaches both ends: some archives still read, some are refused.
    expect(outs.some((o) => o.kind === "ok")).toBe(true);
    expect(outs.some((o) => o.kind === "error")).toBe(true);
  });
});
