// The scale scenarios of issue 22, each with its limit (printed as met or missed):
//  x1  a RUN writing 400 directories of 250 small files on the Debian base (a timed
//      scenario, every builder): snapshot + layer write against `tar -c | gzip -1` of
//      the same tree made on the host; ocibuild's peak RSS;
//  x2  a 2 GiB layer of generated data: ocibuild's layer writer against pigz on every core;
//  x3  a 30-stage Dockerfile with a wide graph (timed, cold and cached): scheduling
//      overhead per stage;
//  x4  a fully cached rebuild of a 50-step Dockerfile (timed, cold and cached) against
//      `node -e 0` plus one registry round trip per base image and per pushed manifest;
//  x5  a ~500 MB base pulled and extracted, cold, against `skopeo copy` + `umoci unpack`.
import { get as httpGet } from "node:http";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { median, prng, randomBuffer, run, textBuffer, which } from "./util.mjs";

export const SCALE_SIZES = {
  full: { dirs: 400, perDir: 250, layerBytes: 2 ** 31, pullBytes: 450e6 },
  quick: { dirs: 40, perDir: 250, layerBytes: 256 * 2 ** 20, pullBytes: 64 * 2 ** 20 },
};

/** Limits of issue 22. */
export const SCALE_LIMITS = { snapshotToTarGzip: 1.5, rssMiB: 300, layerToPigz: 0.9, msPerStage: 20, cachedToFloor: 1.5, pullToSkopeoUmoci: 1.2 };

/** TARGETS rows for the timed scale scenarios (ratio to the peer, at most). */
export const SCALE_TARGETS = { "x1/cold": { buildkit: 1.0 } };

export const DONE_MARKER = "x1-files-written";

/** The shell loop of x1 (plain sh, no python3 in the image): DIRS directories of PER small files under ROOT. */
export function filesScript(root, z) {
  return `i=0; while [ $i -lt ${z.dirs} ]; do d=${root}/pkg$i; mkdir -p $d; j=0; while [ $j -lt ${z.perDir} ]; do echo "module.exports = { pkg: $i, file: $j, name: 'pkg$i/f$j' };" > $d/f$j.js; j=$((j+1)); done; i=$((i+1)); done`;
}

const x1Dockerfile = (z) => `ARG BASE
FROM \${BASE}
RUN ${filesScript("/deps", z)}; echo ${DONE_MARKER}
`;

const STAGE_ROOTS = 10;
const STAGE_CHILDREN = 19; // + the final stage: 30
function x3Dockerfile() {
  const out = ["ARG BASE"];
  for (let i = 0; i < STAGE_ROOTS; i++) out.push(`FROM \${BASE} AS a${i}`, `RUN mkdir /out && echo a${i} > /out/a${i}.txt`);
  for (let k = 0; k < STAGE_CHILDREN; k++) {
    const p = Math.floor(k / 2);
    out.push(`FROM \${BASE} AS b${k}`, `COPY --from=a${p} /out /out`, `RUN cat /out/a${p}.txt > /out/b${k}.txt`);
  }
  out.push("FROM ${BASE}");
  for (let k = 0; k < STAGE_CHILDREN; k++) out.push(`COPY --from=b${k} /out /out/b${k}`);
  return out.join("\n") + "\n";
}
export const X3_STAGES = STAGE_ROOTS + STAGE_CHILDREN + 1;

function x4Dockerfile() {
  const out = ["ARG BASE", "FROM ${BASE}"];
  for (let i = 0; i < 50; i++) out.push(i % 5 === 4 ? `ENV STEP${i}=${i}` : `RUN echo ${i} > /step${i}.txt`);
  return out.join("\n") + "\n";
}

/** The timed scale scenarios (x1, x3, x4), made with scenarios.mjs's makeOnce. */
export async function prepareScaleScenarios(root, mode, makeOnce) {
  const z = SCALE_SIZES[mode];
  const files = await makeOnce(join(root, `x1-files-${mode}`), (d) => writeFile(join(d, "Dockerfile"), x1Dockerfile(z)));
  const wide = await makeOnce(join(root, "x3-wide-30"), (d) => writeFile(join(d, "Dockerfile"), x3Dockerfile()));
  const steps = await makeOnce(join(root, "x4-steps-50"), (d) => writeFile(join(d, "Dockerfile"), x4Dockerfile()));
  return [
    { id: "x1", title: `RUN writing ${z.dirs * z.perDir} small files (${z.dirs} dirs)`, base: "debian", dir: files, phases: ["cold"] },
    { id: "x3", title: `${X3_STAGES} stages, wide graph (10 roots, 19 children)`, base: "busybox", dir: wide, phases: ["cold", "warm"] },
    { id: "x4", title: "50-step Dockerfile (40 RUN, 10 ENV)", base: "busybox", dir: steps, phases: ["cold", "warm"] },
  ];
}

/** x1's baseline: the same tree written on the host by the same loop, then `tar -c | gzip -1` of it (median of runs). */
/**
 * x1's baseline: the same tree written on the host by the same loop, and `tar -c | gzip -1`
 * of it, timed by `sample()` right after each ocibuild x1 build (so load swings hit both
 * alike); `result()` has the median, `dispose()` removes the tree.
 */
export async function filesBaseline(tmpRoot, mode) {
  const z = SCALE_SIZES[mode];
  const dir = await mkdtemp(join(tmpRoot, "x1-tree-"));
  const made = await run("sh", ["-c", filesScript(`'${dir}/deps'`, z)]);
  const t = [];
  return {
    async sample() {
      t.push((await run("sh", ["-c", `tar -cf - -C '${dir}' deps | gzip -1 > /dev/null`])).ms);
    },
    result: () => ({ files: z.dirs * z.perDir, commandMs: made.ms, tarGzipMs: median(t), samples: t }),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/** One HEAD of a manifest on a new connection: a registry round trip. */
function headOnce(url) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = httpGet(url, { method: "HEAD", agent: false, headers: { accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`HEAD ${url}: ${res.statusCode}`))));
    });
    req.on("error", reject);
  });
}

/** x4's floor: `node -e 0` and a manifest HEAD on the harness's registry (medians of 7). */
export async function cachedFloor(registryUrl, baseRef) {
  const [, repo, tag] = /^[^/]+\/(.+):([^:/]+)$/.exec(baseRef);
  const node = [];
  const head = [];
  for (let i = 0; i < 7; i++) {
    node.push((await run(process.execPath, ["-e", "0"])).ms);
    head.push(await headOnce(`${registryUrl}/v2/${repo}/manifests/${tag}`));
  }
  const nodeMs = median(node);
  const headMs = median(head);
  // One base image and one pushed manifest: two round trips.
  return { nodeMs, headMs, floorMs: nodeMs + 2 * headMs };
}

/** x2: writeLayer on generated data (rss-child.mjs) against pigz (every core) or gzip on the tar of the same entries. */
export async function bigLayer(benchDir, dist, tmpRoot, bytes) {
  const child = join(benchDir, "lib/rss-child.mjs");
  const one = async (n, ...extra) => JSON.parse((await run(process.execPath, [child, dist, String(n), ...extra])).stdout);
  const small = await one(1 << 20);
  const big = await one(bytes);
  const tmp = await mkdtemp(join(tmpRoot, "x2-"));
  try {
    const tar = join(tmp, "layer.tar");
    await one(bytes, "--tar", tar);
    const pigz = await which("pigz");
    const n = cpus().length;
    const cmd = pigz ? `pigz -p ${n} -6 -n -c < '${tar}' > /dev/null` : `gzip -6 -n -c < '${tar}' > /dev/null`;
    await run("sh", ["-c", `cat '${tar}' > /dev/null`]); // in the page cache, as the generated data is in memory
    const peer = await run("sh", ["-c", cmd]);
    const mbps = (ms) => big.tarBytes / 1e6 / (ms / 1000);
    return { bytes, tarBytes: big.tarBytes, peer: pigz ? `pigz -p ${n} -6` : "gzip -6 (pigz missing)", writeLayerMs: big.ms, peerMs: peer.ms, mbPerSec: { writeLayer: mbps(big.ms), peer: mbps(peer.ms) }, ratio: peer.ms / big.ms, maxRssKiB: big.maxRssKiB, smallRssKiB: small.maxRssKiB };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** x5's context: FROM the Debian base, COPY of `bytes` of generated files (64 KiB blocks, random and text-like alternately). */
export async function bigBaseContext(root, mode, makeOnce) {
  const z = SCALE_SIZES[mode];
  return makeOnce(join(root, `x5-big-base-${mode}`), async (d) => {
    const rand = prng(5);
    await mkdir(join(d, "big"));
    const files = 9;
    const per = Math.floor(z.pullBytes / files);
    for (let i = 0; i < files; i++) {
      const blocks = [];
      for (let off = 0, k = 0; off < per; off += 65536, k++) blocks.push(k % 2 ? textBuffer(rand, Math.min(65536, per - off)) : randomBuffer(rand, Math.min(65536, per - off)));
      await writeFile(join(d, "big", `blob${i}.bin`), Buffer.concat(blocks));
    }
    await writeFile(join(d, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nCOPY big/ /big/\n");
  });
}

/** x5: the pull-and-extract of `bigRef` by ocibuild (a cold `FROM big` + `RUN true` build) against skopeo copy + umoci unpack. */
export async function pullExtract(oc, root, tmpRoot, bigRef, registryHost) {
  const dir = join(root, "x5-pull");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nRUN true\n");
  const s = { id: "x5-pull", dir };
  await oc.reset(s);
  const ours = await oc.build(s, `${registryHost}/bench/x5-pull:cold`, bigRef);
  await oc.reset(s);
  const tmp = await mkdtemp(join(tmpRoot, "x5-"));
  try {
    const copy = await run("skopeo", ["copy", "--quiet", "--src-tls-verify=false", `docker://${bigRef}`, `oci:${tmp}/layout:big`]);
    const unpack = await run("umoci", ["unpack", ...(process.getuid?.() === 0 ? [] : ["--rootless"]), "--image", `${tmp}/layout:big`, `${tmp}/bundle`]);
    const from = ours.steps.find((x) => x.instruction.startsWith("FROM"));
    return { ocibuildMs: ours.ms, fromStepSeconds: from?.seconds, maxRssKiB: ours.parts.maxRssKiB, skopeoMs: copy.ms, umociMs: unpack.ms, ratio: ours.ms / (copy.ms + unpack.ms) };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The limits of x1, x3 and x4 from the aggregated timed rows (their ocibuild median run). */
export function scaleVerdicts(rows, extra) {
  const out = {};
  const row = (id, phase) => rows.find((r) => r.scenario === id && r.phase === phase);
  const x1 = row("x1", "cold")?.ocibuildMedianRun;
  if (x1 && extra.files) {
    const step = x1.steps.find((s) => s.atMs?.lastOutput !== undefined);
    // The median of every run's snapshot + layer write, against the median of the baseline's runs.
    const windows = row("x1", "cold")?.afterOutputMs ?? [];
    const snapshotMs = windows.length > 0 ? median(windows) : NaN;
    out.x1 = { ...extra.files, snapshotLayerMs: snapshotMs, snapshotSamples: windows, runStepMs: step ? step.atMs.end - step.atMs.start : NaN, ratio: snapshotMs / extra.files.tarGzipMs, maxRssKiB: x1.parts?.maxRssKiB };
  }
  for (const phase of ["cold", "warm"]) {
    const m = row("x3", phase)?.ocibuildMedianRun;
    if (!m) continue;
    const n = cpus().length;
    const span = Math.max(...m.steps.map((s) => s.atMs.end)) - Math.min(...m.steps.map((s) => s.atMs.start));
    const sum = m.steps.reduce((a, s) => a + s.seconds * 1000, 0);
    (out.x3 ??= {})[phase] = { totalMs: m.ms, spanMs: span, stepsMs: sum, parallelism: n, msPerStage: (span - sum / n) / X3_STAGES, msPerStageTotal: (m.ms - sum / n) / X3_STAGES };
  }
  const x4 = row("x4", "warm");
  if (x4 && extra.floor) out.x4 = { ...extra.floor, ms: x4.median.ocibuild, ratio: x4.median.ocibuild / extra.floor.floorMs };
  return out;
}
