// Aggregation (medians, ratios against the targets) and the stdout table.
import { fmtRatio, fmtSec, median } from "./util.mjs";

/** rows: [{ scenario, title, phase, samples: { peer: [ms|NaN] } }] -> rows with medians and ratios. */
export function aggregate(rows, targets) {
  return rows.map((r) => {
    const med = Object.fromEntries(Object.entries(r.samples).map(([p, v]) => [p, median(v)]));
    const ratio = {};
    const target = targets[`${r.scenario}/${r.phase}`] ?? {};
    const met = {};
    for (const p of Object.keys(med)) {
      if (p === "ocibuild") continue;
      ratio[p] = med.ocibuild / med[p];
      if (target[p] !== undefined && Number.isFinite(ratio[p])) met[p] = ratio[p] <= target[p];
    }
    return { ...r, median: med, ratio, target, met };
  });
}

function pad(s, n, right = false) {
  s = String(s);
  return right ? s.padStart(n) : s.padEnd(n);
}

export function table(rows, peers) {
  const others = peers.filter((p) => p !== "ocibuild");
  const head = [pad("scenario", 52), pad("phase", 7), pad("ocibuild", 9, true)];
  for (const p of others) head.push(pad(p, 9, true), pad("ratio (target)", 20));
  const lines = [head.join("  ")];
  for (const r of rows) {
    const cells = [pad(`${r.scenario} ${r.title}`.slice(0, 52), 52), pad(r.phase, 7), pad(fmtSec(r.median.ocibuild), 9, true)];
    for (const p of others) {
      const t = r.target[p];
      const verdict = r.met[p] === undefined ? "" : r.met[p] ? " ok" : " MISS";
      cells.push(pad(fmtSec(r.median[p]), 9, true), pad(`${fmtRatio(r.ratio[p])}${t !== undefined ? ` (<=${t}${verdict})` : ""}`, 20));
    }
    lines.push(cells.join("  "));
  }
  return lines.join("\n");
}

export function microLines(micro) {
  const out = [];
  if (micro.layer) {
    const mb = (micro.layer.tarBytes / 1e6).toFixed(0);
    for (const [level, l] of Object.entries(micro.layer.levels)) {
      const r = l.mbPerSec;
      out.push(
        `layer write, level ${level}, ${mb} MB tar of ${micro.layer.data}: writeLayer ${r.writeLayer.toFixed(1)} MB/s, gzip -${level} alone ${r.gzip.toFixed(1)} MB/s ` +
          `-> ${fmtRatio(l.ratioToGzip)} of gzip (target >=0.9${l.ratioToGzip >= 0.9 ? " ok" : " MISS"}); node:zlib alone ${r.zlib.toFixed(1)} MB/s, sha256 ${r.sha256.toFixed(0)} MB/s, walk+tar ${r.walkTar.toFixed(0)} MB/s (walk alone ${fmtSec(l.ms.walk)} for ${micro.layer.files} files), ` +
          `gzip size ${((l.gzipBytes / micro.layer.tarBytes) * 100).toFixed(1)}% of tar`,
      );
    }
  }
  if (micro.layerZstd) {
    const z = micro.layerZstd;
    const r = z.mbPerSec;
    out.push(
      `zstd layer write, level ${z.level}, ${(z.tarBytes / 1e6).toFixed(0)} MB tar: writeLayer ${r.writeLayer.toFixed(1)} MB/s, zstd -${z.level} alone ${r.zstd1.toFixed(1)} MB/s (one thread; ${r.zstdAll.toFixed(1)} MB/s on all cores), ` +
        `zstd size ${((z.zstdBytes / z.tarBytes) * 100).toFixed(1)}% of tar; read back (${z.decompressor}) ${r.read.toFixed(0)} MB/s, zstd -d alone ${r.zstdRead.toFixed(0)} MB/s`,
    );
  }
  if (micro.hashing) {
    const h = micro.hashing;
    out.push(
      `context hashing (FileHasher), ${h.files} files, ${(h.bytes / 1e6).toFixed(0)} MB: cold ${fmtSec(h.ms.cold)} (${h.filesPerSec.cold.toFixed(0)} files/s, ${h.mbPerSecCold.toFixed(0)} MB/s), ` +
        `warm ${fmtSec(h.ms.warm)} (${h.filesPerSec.warm.toFixed(0)} files/s); walk+lstat alone ${fmtSec(h.ms.walk)}, save ${fmtSec(h.ms.save)}`,
    );
  }
  if (micro.cliStart) out.push(`CLI start-up (ocibuild --version): ${fmtSec(micro.cliStart.ms)}`);
  if (micro.native) {
    out.push(
      `in-process filesystem calls (koffi): a step's root mounted and unmounted ${micro.native.mountMs.toFixed(1)} ms, getXattrs of 10,000 paths ${micro.native.getXattrs10kMs.toFixed(1)} ms ` +
        "(the python3 helper they replaced: 10.1 ms and 26.9 ms, measured when they were swapped)",
    );
  }
  if (micro.runNetwork) {
    const n = micro.runNetwork;
    out.push(
      `RUN true per network mode (bwrap, median of ${n.default.samples.length}): own namespace through slirp4netns ${n.default.ms.toFixed(1)} ms, ` +
        `none ${n.none.ms.toFixed(1)} ms, host ${n.host.ms.toFixed(1)} ms -> the default network costs ${(n.default.ms - n.host.ms).toFixed(1)} ms per RUN over the host's`,
    );
  }
  if (micro.rss) {
    const r = micro.rss;
    out.push(
      `peak RSS of a ${(r.large.bytes / 2 ** 30).toFixed(2)} GiB layer write: ${(r.large.maxRssKiB / 1024).toFixed(0)} MiB (a 1 MiB layer: ${(r.baseline.maxRssKiB / 1024).toFixed(0)} MiB; ` +
        `growth ${r.growthMiB.toFixed(0)} MiB), ${((r.large.tarBytes / 1e6) / (r.large.ms / 1000)).toFixed(1)} MB/s`,
    );
  }
  return out;
}

const verdict = (ok) => (ok === undefined ? "" : ok ? "met" : "missed");
const mib = (kib) => (Number.isFinite(kib) ? `${(kib / 1024).toFixed(0)} MiB` : "-");

/** The scale scenarios of issue 22 (bench/lib/scale.mjs), each with its limit: met or missed. */
export function scaleLines(scale, limits) {
  const out = ["scale scenarios (issue 22; limits met or missed):"];
  const { x1, x2, x3, x4, x5 } = scale;
  if (x1) {
    out.push(
      `  x1 ${x1.files} small files: snapshot + layer write ${fmtSec(x1.snapshotLayerMs)} (the RUN step's end minus its command's last output, median of the runs) against tar -c | gzip -1 of the same tree ${fmtSec(x1.tarGzipMs)} ` +
        `-> ${fmtRatio(x1.ratio)} (limit <= ${limits.snapshotToTarGzip}x: ${verdict(Number.isFinite(x1.ratio) ? x1.ratio <= limits.snapshotToTarGzip : undefined)}); ` +
        `peak RSS ${mib(x1.maxRssKiB)} (limit < ${limits.rssMiB} MiB: ${verdict(Number.isFinite(x1.maxRssKiB) ? x1.maxRssKiB / 1024 < limits.rssMiB : undefined)}); ` +
        `the RUN step ${fmtSec(x1.runStepMs)}, the same loop on the host ${fmtSec(x1.commandMs)}; the whole build against buildah/BuildKit: the table's x1 row`,
    );
  }
  if (x2) {
    out.push(
      `  x2 ${(x2.tarBytes / 2 ** 30).toFixed(2)} GiB layer: writeLayer ${x2.mbPerSec.writeLayer.toFixed(1)} MB/s against ${x2.peer} ${x2.mbPerSec.peer.toFixed(1)} MB/s ` +
        `-> ${fmtRatio(x2.ratio)} (limit >= ${limits.layerToPigz}x: ${verdict(x2.ratio >= limits.layerToPigz)}); peak RSS ${mib(x2.maxRssKiB)} (a 1 MiB layer: ${mib(x2.smallRssKiB)}; limit < ${limits.rssMiB} MiB: ${verdict(x2.maxRssKiB / 1024 < limits.rssMiB)})`,
    );
  }
  for (const [phase, p] of Object.entries(x3 ?? {})) {
    out.push(
      `  x3 30 stages, ${phase}: steps span ${fmtSec(p.spanMs)}, step times ${fmtSec(p.stepsMs)} over ${p.parallelism} cores -> ${p.msPerStage.toFixed(1)} ms/stage of scheduling ` +
        `(limit < ${limits.msPerStage}: ${verdict(p.msPerStage < limits.msPerStage)}); from the whole build (${fmtSec(p.totalMs)}, start-up and push included) ${p.msPerStageTotal.toFixed(1)} ms/stage`,
    );
  }
  if (x4) {
    out.push(
      `  x4 50 steps, fully cached: ${fmtSec(x4.ms)} against node -e 0 ${fmtSec(x4.nodeMs)} + 2 registry round trips of ${x4.headMs.toFixed(1)} ms = ${fmtSec(x4.floorMs)} ` +
        `-> ${fmtRatio(x4.ratio)} (limit < ${limits.cachedToFloor}x: ${verdict(Number.isFinite(x4.ratio) ? x4.ratio < limits.cachedToFloor : undefined)})`,
    );
  }
  if (x5) {
    out.push(
      `  x5 big base pulled and extracted, cold: ocibuild ${fmtSec(x5.ocibuildMs)} (FROM step ${x5.fromStepSeconds?.toFixed(2)}s, with a RUN true and the push) against skopeo copy ${fmtSec(x5.skopeoMs)} + umoci unpack ${fmtSec(x5.umociMs)} ` +
        `-> ${fmtRatio(x5.ratio)} (limit <= ${limits.pullToSkopeoUmoci}x: ${verdict(x5.ratio <= limits.pullToSkopeoUmoci)}); peak RSS ${mib(x5.maxRssKiB)}`,
    );
  }
  return out;
}
