/**
 * DiffIdCheck: a layer blob passes through unchanged, decompressed and hashed on
 * the side; a blob that does not decompress to its DiffID (or decompresses past
 * the size limit) fails before its reader has all of it.
 */
import { gzipSync } from "node:zlib";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { DiffIdCheck } from "../../../src/builder/fs/base-layers.js";
import type { LayerRecord } from "../../../src/builder/stage-state.js";
import { diffIdOf, digestOf } from "../../../src/oci/digest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import { makeTar } from "../../../testdata/builder/fixtures.js";

function record(blob: Buffer, diffId: string, mediaType: string = MediaType.OCI_LAYER_GZIP): LayerRecord {
  return { descriptor: { mediaType, digest: digestOf(blob), size: blob.length }, diffId: diffId as never, source: { kind: "registry", ref: "example.test/base" } };
}

/** Pipe `blob` in 1000-byte chunks through a DiffIdCheck; what the reader got, and the error. */
async function through(blob: Buffer, check: DiffIdCheck): Promise<{ got: Buffer; error?: { code?: string; message: string } }> {
  const parts = Array.from({ length: Math.ceil(blob.length / 1000) }, (_, i) => blob.subarray(i * 1000, (i + 1) * 1000));
  const chunks: Buffer[] = [];
  try {
    for await (const c of Readable.from(parts).pipe(check)) chunks.push(c as Buffer);
    return { got: Buffer.concat(chunks) };
  } catch (e) {
    return { got: Buffer.concat(chunks), error: e as { code?: string; message: string } };
  }
}

describe("DiffIdCheck", () => {
  it("passes a gzip and a plain layer through unchanged when they match, and says their DiffID", async () => {
    const tar = await makeTar([{ name: "a", content: "x".repeat(5000) }]);
    const gz = gzipSync(tar);
    for (const [blob, type] of [[gz, MediaType.OCI_LAYER_GZIP], [tar, MediaType.OCI_LAYER]] as const) {
      const check = new DiffIdCheck(record(blob, diffIdOf(tar), type));
      const r = await through(blob, check);
      expect(r.error).toBeUndefined();
      expect(r.got.equals(blob)).toBe(true);
      expect(check.diffId).toBe(diffIdOf(tar));
    }
  });

  it("fails a layer that decompresses to something else before its reader has it all, naming the image", async () => {
    const tar = await makeTar([{ name: "a", content: "y".repeat(5000) }]);
    const gz = gzipSync(tar);
    const r = await through(gz, new DiffIdCheck(record(gz, diffIdOf("other"))));
    expect(r.error).toMatchObject({ code: "LAYER_DIFFID_MISMATCH", message: expect.stringContaining("example.test/base") });
    expect(r.got.length).toBeLessThan(gz.length);
  });

  it("fails a layer that decompresses past the size limit, and a blob that is not gzip", async () => {
    const tar = await makeTar([{ name: "zeros", content: "\0".repeat(4 * 1024 * 1024) }]);
    const gz = gzipSync(tar);
    const big = await through(gz, new DiffIdCheck(record(gz, diffIdOf(tar)), 1024 * 1024));
    expect(big.error).toMatchObject({ code: "LAYER_TOO_LARGE" });
    const broken = Buffer.concat([gz.subarray(0, 100), Buffer.alloc(2000, 7)]);
    const bad = await through(broken, new DiffIdCheck(record(broken, diffIdOf(tar))));
    expect(bad.error?.code).toMatch(/^LAYER_(DECOMPRESS_FAILED|DIFFID_MISMATCH)$/);
  });
});
