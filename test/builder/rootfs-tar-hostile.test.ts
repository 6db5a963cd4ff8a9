/**
 * The tar reader on hostile metadata: numbers that are not numbers, sizes that
 * are not whole, extended headers built to exhaust memory. Each case runs in a
 * worker (test/helpers/tar-isolated.ts), so a reader that spins fails the test
 * instead of hanging it.
 */
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { readTar } from "../../src/builder/rootfs-tar.js";
import { END, fileEntry, gnuLong, header, padded, paxHeader } from "../helpers/tar-craft.js";
import { readTarIsolated, type ReadOutcome } from "../helpers/tar-isolated.js";

const withPax = (records: Record<string, string>, extra = {}) =>
  Buffer.concat([paxHeader(records), fileEntry("victim", "hello", extra), fileEntry("after", "x"), END]);

function expectInvalid(out: ReadOutcome, naming: string): void {
  expect(out).toMatchObject({ kind: "error", name: "OcibuildError", code: "ROOTFS_TAR_INVALID" });
  expect((out as { message: string }).message).toContain(naming);
}

describe("readTar: numeric fields", () => {
  it("refuses a PAX size, uid, gid or mtime that is not a number in range, naming the entry", async () => {
    const bad: Record<string, string>[] = [
      { size: "0.5" }, { size: "-1" }, { size: "1e3" }, { size: "0x10" }, { size: " 5" }, { size: "5abc" }, { size: "NaN" },
      { size: "Infinity" }, { size: "99999999999999999999" },
      { uid: "1.5" }, { uid: "-1" }, { uid: "4294967296" }, { gid: "0.5" }, { gid: "abc" },
      { mtime: "abc" }, { mtime: "1e9" }, { mtime: "1.2.3" }, { mtime: "99999999999999999999" }, { mtime: "Infinity" },
    ];
    const outs = await readTarIsolated(bad.map((r) => withPax(r)), { caseTimeoutMs: 3000 });
    outs.forEach((out, i) => {
      expect([bad[i], out.kind]).toEqual([bad[i], "error"]);
      expectInvalid(out, "victim");
    });
  });

  it("reads well-formed PAX numbers, fractional and negative mtimes included", async () => {
    const [out] = await readTarIsolated([
      Buffer.concat([paxHeader({ uid: "4000000", gid: "0007", mtime: "1700000000.25", size: "5" }), fileEntry("a", "hello"),
        paxHeader({ mtime: "-86400" }), fileEntry("b", ""), END]),
    ]);
    expect(out).toMatchObject({
      kind: "ok",
      entries: [
        { name: "a", uid: 4000000, gid: 7, mtime: 1700000000250, size: 5, body: 5 },
        { name: "b", mtime: -86400000 },
      ],
    });
  });

  it("refuses header fields that are not octal or base-256 in range, naming the entry", async () => {
    const huge256 = Buffer.from([0x80, ...Array(11).fill(0xff)]);
    const negative256 = Buffer.from([0xff, ...Array(11).fill(0xff)]);
    const fields = [
      { size: "00000000z05\0" }, { size: "0000 000005\0" }, { size: huge256 }, { size: negative256 },
      { uid: "-000001\0" }, { uid: Buffer.from([0x80, 0, 0, 1, 0, 0, 0, 0]) }, { gid: "0x1\0" }, { mtime: "1e10\0" }, { mtime: huge256 },
      { mode: "9999999\0" }, { devmajor: "zzz\0" }, { devminor: Buffer.from([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) },
    ];
    const cases = fields.map((f) => Buffer.concat([header({ name: "victim", ...f }), padded(Buffer.from("hello")), END]));
    const outs = await readTarIsolated(cases, { caseTimeoutMs: 3000 });
    outs.forEach((out, i) => {
      expect([i, out.kind]).toEqual([i, "error"]);
      expectInvalid(out, "victim");
    });
  });

  it("reads base-256 numbers in range (GNU tar's big uids and sizes)", async () => {
    const uid = Buffer.from([0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    const size = Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    const [out] = await readTarIsolated([Buffer.concat([header({ name: "big", uid, size }), padded(Buffer.from("hello")), END])]);
    expect(out).toMatchObject({ kind: "ok", entries: [{ name: "big", uid: 0x7fffffff, size: 5, body: 5 }] });
  });
});
