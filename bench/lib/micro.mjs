// Micro-figures: layer write throughput against gzip alone on the same bytes (and
// the zstd layer write against zstd alone),
// context hashing throughput (FileHasher cold and warm), the peak RSS of a large
// layer write (in a child process, so nothing else is counted), and what RUN's
// network mode costs per step.
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, copyFile, lstat, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { median, run } from "./util.mjs";

/** A Writable that drops what it gets and counts it. */
function sink() {
  let bytes = 0;
  const w = new Writable({
    highWaterMark: 1 << 20,
    write(chunk, _enc, cb) {
      bytes += chunk.length;
      cb();
    },
  });
  w.bytes = () => bytes;
  return w;
}

/**
 * tar+gzip+sha256 via writeLayer(walkDirectory(dir)) against `gzip -LEVEL` alone
 * (GNU gzip, one core) and node:zlib alone, on the tar stream of the same tree.
 */
export async function layerThroughput(dist, dir, tmpRoot, { runs, levels }) {
  const { writeLayer, tarChunks } = await import(join(dist, "oci/layer.js"));
  const { walkDirectory } = await import(join(dist, "oci/tar-entries.js"));
  const tmp = await mkdtemp(join(tmpRoot, "micro-layer-"));
  try {
    const tarPath = join(tmp, "layer.tar");
    await pipeline(tarChunks(walkDirectory(dir)), createWriteStream(tarPath));
    const tarBytes = (await stat(tarPath)).size;
    const out = { data: dir, tarBytes, levels: {} };
    for (const level of levels) {
      const t = { writeLayer: [], gzip: [], zlib: [], sha256: [], walkTar: [], walk: [] };
      let gzBytes = 0;
      for (let i = 0; i < runs; i++) {
        // Alternate the order so a warmer page cache does not favour one side.
        const order = i % 2 ? ["gzip", "writeLayer"] : ["writeLayer", "gzip"];
        for (const which of order) {
          if (which === "writeLayer") {
            const s = sink();
            const t0 = performance.now();
            const w = await writeLayer(walkDirectory(dir), s, { compressionLevel: level });
            t.writeLayer.push(performance.now() - t0);
            gzBytes = w.size;
          } else {
            const r = await run("sh", ["-c", `gzip -n -${level} -c < '${tarPath}' > /dev/null`]);
            t.gzip.push(r.ms);
          }
        }
      }
      {
        const t0 = performance.now();
        await pipeline(createReadStream(tarPath, { highWaterMark: 1 << 16 }), createGzip({ level }), sink());
        t.zlib.push(performance.now() - t0);
      }
      {
        const t0 = performance.now();
        const h = createHash("sha256");
        for await (const c of createReadStream(tarPath, { highWaterMark: 1 << 16 })) h.update(c);
        h.digest();
        t.sha256.push(performance.now() - t0);
      }
      {
        const t0 = performance.now();
        const s = sink();
        await pipeline(tarChunks(walkDirectory(dir)), s);
        t.walkTar.push(performance.now() - t0);
      }
      {
        // The walk alone (readdir + lstat per entry, no file content read).
        const t0 = performance.now();
        let n = 0;
        for await (const e of walkDirectory(dir)) n += e.type === "file" ? 1 : 0;
        t.walk = [performance.now() - t0];
        out.files = n;
      }
      const mbps = (ms) => tarBytes / 1e6 / (ms / 1000);
      const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
      out.levels[level] = {
        ms: m,
        mbPerSec: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, mbps(v)])),
        gzipBytes: gzBytes,
        ratioToGzip: m.gzip / m.writeLayer,
        samples: t,
      };
    }
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * The zstd layer write beside the gzip one: writeLayer(walkDirectory(dir)) with
 * compression zstd (4 MiB frames on the threadpool) against `zstd -LEVEL` alone (one
 * thread, and all cores) on the tar of the same tree; and reading the layer back
 * through the decompressor layers use (node:zlib's zstd where Node has it, fzstd
 * otherwise) against `zstd -d` alone.
 */
export async function layerZstdThroughput(dist, dir, tmpRoot, { runs, level }) {
  const { writeLayer, tarChunks } = await import(join(dist, "oci/layer.js"));
  const { walkDirectory } = await import(join(dist, "oci/tar-entries.js"));
  const { zstdDecompressor } = await import(join(dist, "oci/zstd-decompress.js"));
  const tmp = await mkdtemp(join(tmpRoot, "micro-zstd-"));
  try {
    const tarPath = join(tmp, "layer.tar");
    const zstPath = join(tmp, "layer.tar.zst");
    await pipeline(tarChunks(walkDirectory(dir)), createWriteStream(tarPath));
    const tarBytes = (await stat(tarPath)).size;
    const t = { writeLayer: [], zstd1: [], zstdAll: [], read: [], zstdRead: [] };
    let zstBytes = 0;
    for (let i = 0; i < runs; i++) {
      const order = i % 2 ? ["zstd", "writeLayer"] : ["writeLayer", "zstd"];
      for (const which of order) {
        if (which === "writeLayer") {
          const t0 = performance.now();
          const w = await writeLayer(walkDirectory(dir), createWriteStream(zstPath), { compression: "zstd", compressionLevel: level });
          t.writeLayer.push(performance.now() - t0);
          zstBytes = w.size;
        } else {
          t.zstd1.push((await run("sh", ["-c", `zstd -q -${level} -T1 -c < '${tarPath}' > /dev/null`])).ms);
          t.zstdAll.push((await run("sh", ["-c", `zstd -q -${level} -T0 -c < '${tarPath}' > /dev/null`])).ms);
        }
      }
      const t0 = performance.now();
      await pipeline(createReadStream(zstPath, { highWaterMark: 1 << 16 }), zstdDecompressor(), sink());
      t.read.push(performance.now() - t0);
      t.zstdRead.push((await run("sh", ["-c", `zstd -q -d -c < '${zstPath}' > /dev/null`])).ms);
    }
    const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
    const mbps = (ms) => tarBytes / 1e6 / (ms / 1000);
    return {
      data: dir,
      level,
      tarBytes,
      zstdBytes: zstBytes,
      decompressor: typeof (await import("node:zlib")).createZstdDecompress === "function" ? "node:zlib" : "fzstd",
      ms: m,
      mbPerSec: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, mbps(v)])),
      samples: t,
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function listFiles(root) {
  const files = [];
  const walk = async (d) => {
    for (const n of (await readdir(d)).sort()) {
      const p = join(d, n);
      const st = await lstat(p);
      if (st.isDirectory()) await walk(p);
      else if (st.isFile()) files.push([p, st]);
    }
  };
  await walk(root);
  return files;
}

/** FileHasher over every file of `dir`: cold (empty stat cache) and warm (a new hasher reading the saved cache). */
export async function contextHashing(dist, dir, tmpRoot, { runs }) {
  const { FileHasher } = await import(join(dist, "cache/file-hash.js"));
  const tmp = await mkdtemp(join(tmpRoot, "micro-hash-"));
  try {
    const t = { walk: [], cold: [], warm: [], save: [] };
    let files = [];
    for (let i = 0; i < runs; i++) {
      const state = join(tmp, `stat-cache-${i}.json`);
      let t0 = performance.now();
      files = await listFiles(dir);
      t.walk.push(performance.now() - t0);
      t0 = performance.now();
      const cold = new FileHasher(state);
      for (const [p, st] of files) await cold.hashFile(p, st);
      t.cold.push(performance.now() - t0);
      t0 = performance.now();
      await cold.save();
      t.save.push(performance.now() - t0);
      t0 = performance.now();
      const warm = new FileHasher(state);
      for (const [p, st] of files) await warm.hashFile(p, st);
      t.warm.push(performance.now() - t0);
      if (warm.bytesRead !== 0) throw new Error(`warm FileHasher read ${warm.bytesRead} bytes; its stat cache did not hit`);
    }
    const bytes = files.reduce((a, [, st]) => a + st.size, 0);
    const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
    return {
      data: dir,
      files: files.length,
      bytes,
      ms: m,
      filesPerSec: { cold: files.length / (m.cold / 1000), warm: files.length / (m.warm / 1000) },
      mbPerSecCold: bytes / 1e6 / (m.cold / 1000),
      samples: t,
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Peak RSS of writeLayer for `bytes` of generated content, and of a tiny layer for the baseline. */
export async function layerPeakRss(benchDir, dist, bytes) {
  const child = join(benchDir, "lib/rss-child.mjs");
  const one = async (n) => JSON.parse((await run(process.execPath, [child, dist, String(n)])).stdout);
  const base = await one(1 << 20);
  const big = await one(bytes);
  return { baseline: base, large: big, growthMiB: (big.maxRssKiB - base.maxRssKiB) / 1024 };
}

/** Start-up of the CLI alone (`ocibuild --version`, bin/ocibuild as npm installs it), the floor under every warm rebuild. */
export async function cliStart(repoRoot, runs) {
  const t = [];
  for (let i = 0; i < runs; i++) t.push((await run(join(repoRoot, "bin/ocibuild"), ["--version"])).ms);
  return { ms: median(t), samples: t };
}

/**
 * What RUN's network costs per step: `RUN true` through the bubblewrap executor on a
 * busybox root, with its own network (slirp4netns), none, and the host's; medians of
 * `runs` steps, interleaved so load affects every mode alike. Needs root and bwrap.
 */
export async function runNetworkCost(dist, tmpRoot, runs) {
  const { BwrapExecutor } = await import(join(dist, "builder/sandbox/bwrap.js"));
  const root = await mkdtemp(join(tmpRoot, "run-net-"));
  await mkdir(join(root, "bin"));
  await copyFile("/bin/busybox", join(root, "bin/busybox"));
  await chmod(join(root, "bin/busybox"), 0o755);
  await symlink("busybox", join(root, "bin/sh"));
  await symlink("busybox", join(root, "bin/true"));
  const executor = new BwrapExecutor();
  const modes = ["default", "none", "host"];
  const samples = Object.fromEntries(modes.map((m) => [m, []]));
  try {
    for (let i = 0; i < runs + 1; i++) {
      for (const network of modes) {
        const t0 = performance.now();
        const r = await executor.runInRoot({ root, args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network });
        if (r.exitCode !== 0) throw new Error(`RUN true with network ${network} exited ${r.exitCode}: ${r.tail}`);
        if (i > 0) samples[network].push(performance.now() - t0); // the first round warms caches
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return Object.fromEntries(modes.map((m) => [m, { ms: median(samples[m]), samples: samples[m] }]));
}

/**
 * The filesystem calls Node has no API for, made in-process (koffi, builder/fs/native.ts):
 * a step's root mounted and unmounted (mountRoot on two layer directories) and
 * extended attributes read from 10,000 paths; medians of `runs`. Needs root.
 */
export async function nativeCalls(dist, tmpRoot, runs) {
  const { mountRoot } = await import(join(dist, "builder/fs/overlay.js"));
  const { getXattrs } = await import(join(dist, "builder/fs/native.js"));
  const dir = await mkdtemp(join(tmpRoot, "native-"));
  try {
    const lowers = [join(dir, "l0"), join(dir, "l1")];
    for (const l of lowers) await mkdir(join(l, "d"), { recursive: true });
    const files = join(dir, "files");
    await mkdir(files);
    const paths = [];
    for (let i = 0; i < 10000; i++) paths.push(join(files, `f${i}`));
    for (const p of paths) await writeFile(p, "");
    const mount = [];
    const xattrs = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const root = await mountRoot(lowers, join(dir, `s${i}`));
      await root.unmount();
      mount.push(performance.now() - t0);
      const t1 = performance.now();
      await getXattrs(paths);
      xattrs.push(performance.now() - t1);
    }
    return { mountMs: median(mount), getXattrs10kMs: median(xattrs) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
