/** The header encoder on values a ustar header cannot hold, read back by an independent parser. */
import { describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { writeLayer, type TarSegment } from "../../src/oci/layer.js";
import { encodeHeader, fitsUstar, ustarInto } from "../../src/oci/layer-tar.js";

const T = new Date("2021-03-04T05:06:07Z");

describe("layer writer: values beyond ustar limits", () => {
  /** Independent reading of a header pair: PAX records (if any) and the ustar fields. */
  function parse(h: Buffer): { pax: Record<string, string>; size: number; mtime: number; uid: number; name: string; cksumOk: boolean } {
    const pax: Record<string, string> = {};
    let off = 0;
    if (String.fromCharCode(h[off + 156]!) === "x") {
      const len = parseInt(h.subarray(off + 124, off + 136).toString("latin1"), 8);
      let body = h.subarray(off + 512, off + 512 + len);
      while (body.length > 0) {
        const sp = body.indexOf(0x20);
        const n = Number(body.subarray(0, sp).toString());
        const rec = body.subarray(sp + 1, n - 1).toString("utf8");
        pax[rec.slice(0, rec.indexOf("="))] = rec.slice(rec.indexOf("=") + 1);
        body = body.subarray(n);
      }
      off = 512 + Math.ceil(len / 512) * 512;
    }
    const u = h.subarray(off, off + 512);
    const field = (a: number, b: number) => u.subarray(a, b).toString("latin1").replace(/\0.*$/s, "");
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : u[i]!;
    return {
      pax,
      name: field(0, 100),
      size: parseInt(field(124, 136), 8),
      mtime: parseInt(field(136, 148), 8),
      uid: parseInt(field(108, 116), 8),
      cksumOk: parseInt(field(148, 156), 8) === sum,
    };
  }

  it("puts a 9 GiB size, a pre-1970 mtime, a huge uid and a long uname into PAX records", () => {
    const big = 9 * 1024 ** 3;
    const h = parse(
      encodeHeader({ path: "huge", type: "file", mode: 0o644, uid: 2 ** 31, gid: 0, uname: "u".repeat(40), mtime: new Date(-86_400_000), size: big }, -86_400),
    );
    expect(h.pax).toEqual({ size: String(big), mtime: "-86400", uid: String(2 ** 31), uname: "u".repeat(40) });
    expect(h.name).toBe("huge");
    expect(h.cksumOk).toBe(true);
  });

  it("keeps a 100-byte ASCII name in ustar and moves a 101-byte one to PAX", () => {
    const n100 = "n".repeat(100);
    expect(parse(encodeHeader({ path: n100, type: "fifo", mode: 0o600, uid: 0, gid: 0, mtime: T }, 1)).pax).toEqual({});
    const n101 = "n".repeat(101);
    const h = parse(encodeHeader({ path: n101, type: "fifo", mode: 0o600, uid: 0, gid: 0, mtime: T }, 1));
    expect(h.pax).toEqual({ path: n101 });
    expect(h.cksumOk).toBe(true);
  });

  it("fitsUstar is true exactly where a plain file's header is one ustar block, and ustarInto writes it", () => {
    const cases: [string, number, number, number, number][] = [
      ["a".repeat(100), 0, 0, 0, 0],
      ["a".repeat(101), 0, 0, 0, 0],
      ["caf\u00e9", 0, 0, 0, 0],
      ["tab\there", 0, 0, 0, 0],
      ["p", 0o7777777, 0o7777777, 0o77777777777, 0o77777777777],
      ["p", 0o7777777 + 1, 0, 0, 0],
      ["p", 0, 0o7777777 + 1, 0, 0],
      ["p", 0, 0, 0o77777777777 + 1, 0],
      ["p", 0, 0, 0, 0o77777777777 + 1],
      ["p", 0, 0, 0, -1],
      ["dir/file.js", 1000, 1000, 4096, 1_700_000_000],
    ];
    for (const [path, uid, gid, size, mtime] of cases) {
      const h = encodeHeader({ path, type: "file", mode: 0o644, uid, gid, size, mtime: T, open: () => null as never }, mtime);
      expect(fitsUstar(path, uid, gid, size, mtime), path.slice(0, 20)).toBe(h.length === 512);
      if (h.length !== 512) continue;
      // The worker's call: what headerParts makes of such a file.
      const own = Buffer.alloc(512);
      ustarInto({ name: path, mode: 0o644, uid, gid, size, mtime, typeflag: "0", linkname: "", uname: "", gname: "", devmajor: 0, devminor: 0 }, own, 0);
      expect(own.equals(h)).toBe(true);
    }
  });

  it("refuses a tar segment packed with another sourceDateEpoch than the writer's", async () => {
    const tar = Buffer.alloc(1024);
    ustarInto({ name: "f", mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 5, typeflag: "0", linkname: "", uname: "", gname: "", devmajor: 0, devminor: 0 }, tar, 0);
    const segment: TarSegment = { tar, at: 0, length: 1024, entries: 1, contentBytes: 1, sourceDateEpoch: 5 };
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    async function* one() {
      yield [segment];
    }
    const written = await writeLayer(one(), sink(), { sourceDateEpoch: 5 });
    expect(written.uncompressedSize).toBe(1024 + 1024);
    await expect(writeLayer(one(), sink(), { sourceDateEpoch: 6 })).rejects.toThrow(/sourceDateEpoch 5 given to a writer with 6/);
  });
});
