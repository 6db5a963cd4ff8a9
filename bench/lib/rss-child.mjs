// Child process of the peak-RSS figure: writes one layer of BYTES bytes of generated
// content (16 files, 64 KiB blocks alternately random and text-like, streamed in 64 KiB chunks) through writeLayer into a
// counting sink, then prints { bytes, gzipBytes, ms, maxRssKiB, vmHwmKiB } as JSON.
// Usage: node rss-child.mjs DIST_DIR BYTES [--tar PATH]
// With --tar, it writes the uncompressed tar of the same entries to PATH instead (for
// the x2 scale scenario's pigz baseline) and prints { tarBytes }.
import { createWriteStream, readFileSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { prng, randomBuffer, textBuffer } from "./util.mjs";

const [dist, bytesArg, flag, tarPath] = process.argv.slice(2);
const total = Number(bytesArg);
const { writeLayer, tarChunks } = await import(join(dist, "oci/layer.js"));

const rand = prng(7);
const pattern = Buffer.concat(Array.from({ length: 16 }, (_, k) => (k % 2 ? textBuffer(rand, 65536) : randomBuffer(rand, 65536))));
const files = 16;
const per = Math.floor(total / files);

function content(size) {
  return Readable.from(
    (function* () {
      for (let off = 0; off < size; off += 65536) {
        const n = Math.min(65536, size - off);
        const at = off % pattern.length;
        yield at + n <= pattern.length ? pattern.subarray(at, at + n) : Buffer.concat([pattern.subarray(at), pattern.subarray(0, n - (pattern.length - at))]);
      }
    })(),
    { objectMode: false },
  );
}

function* entries() {
  const mtime = new Date(0);
  yield { path: "data", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime };
  for (let i = 0; i < files; i++) {
    const size = i === files - 1 ? total - per * (files - 1) : per;
    yield { path: `data/blob${String(i).padStart(2, "0")}`, type: "file", mode: 0o644, uid: 0, gid: 0, mtime, size, open: () => content(size) };
  }
}

if (flag === "--tar") {
  const file = createWriteStream(tarPath);
  await pipeline(tarChunks(entries()), file);
  process.stdout.write(JSON.stringify({ tarBytes: file.bytesWritten }) + "\n");
  process.exit(0);
}

let gzipBytes = 0;
const out = new Writable({
  write(chunk, _e, cb) {
    gzipBytes += chunk.length;
    cb();
  },
});
const t0 = performance.now();
const layer = await writeLayer(entries(), out);
const ms = performance.now() - t0;
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
process.stdout.write(
  JSON.stringify({ bytes: total, tarBytes: layer.uncompressedSize, gzipBytes, ms, maxRssKiB: process.resourceUsage().maxRSS, vmHwmKiB: hwm ? Number(hwm[1]) : null }) + "\n",
);
