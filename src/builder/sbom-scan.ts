/**
 * What an SBOM scans besides the final image, as BuildKit's Dockerfile frontend reads
 * it: a stage whose `ARG BUILDKIT_SBOM_SCAN_STAGE` is true (its default, or the build
 * argument of that name), or named in a `BUILDKIT_SBOM_SCAN_STAGE` build argument that
 * lists stages; and the build context when `BUILDKIT_SBOM_SCAN_CONTEXT` is true (a
 * global ARG's default, or the build argument). The context is scanned as a tar of
 * its files, written once to a temp file while its digest is taken.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable, Transform } from "node:stream";
import type { Stage, StagePlan } from "../dockerfile/index.js";
import type { DiffID } from "../oci/digest.js";
import { tarChunks } from "../oci/layer.js";
import { walkDirectory } from "../oci/tar-entries.js";
import type { SbomLayer } from "../attest/sbom.js";
import { openLayer, type StageBlobs } from "./stage-image.js";
import type { StageState } from "./stage-state.js";

export const SCAN_STAGE_ARG = "BUILDKIT_SBOM_SCAN_STAGE";
export const SCAN_CONTEXT_ARG = "BUILDKIT_SBOM_SCAN_CONTEXT";

const isTrue = (v: string | undefined): boolean => v !== undefined && /^(1|t|true|yes|on)$/i.test(v.trim());

/** The value a stage's own `ARG NAME` has: the build argument, else its default. */
function stageArg(stage: Stage, name: string, buildArgs: Readonly<Record<string, string>>): string | undefined {
  for (const ins of stage.instructions) {
    if (ins.kind !== "arg") continue;
    const a = ins.args.find((x) => x.key === name);
    if (a) return buildArgs[name] ?? a.value ?? stage.globalArgs[name];
  }
  return undefined;
}

/** The stages (besides the target) whose filesystems the SBOM also scans. */
export function stagesToScan(plan: StagePlan, buildArgs: Readonly<Record<string, string>>): Stage[] {
  const listed = (buildArgs[SCAN_STAGE_ARG] ?? "").split(",").map((s) => s.trim().toLowerCase()).filter((s) => s && !isTrue(s));
  return plan.order
    .map((i) => plan.stages[i]!)
    .filter((s) => s.index !== plan.target && (isTrue(stageArg(s, SCAN_STAGE_ARG, buildArgs)) || (s.name !== undefined && listed.includes(s.name))));
}

/** Whether the build context is scanned too. */
export function scanContext(plan: StagePlan, buildArgs: Readonly<Record<string, string>>): boolean {
  return isTrue(buildArgs[SCAN_CONTEXT_ARG] ?? plan.stages[plan.target]?.globalArgs[SCAN_CONTEXT_ARG]);
}

/** The context directory as one uncompressed layer for the scanner: tarred once to `scratch`, hashed on the way. */
export async function contextLayer(dir: string, scratch: string, signal?: AbortSignal): Promise<SbomLayer> {
  const path = join(scratch, `sbom-context-${process.pid}-${Date.now()}.tar`);
  const hash = createHash("sha256");
  const tee = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(Readable.from(tarChunks(walkDirectory(dir, { signal }), { sourceDateEpoch: 0, signal })), tee, createWriteStream(path), { signal });
  const diffId = `sha256:${hash.digest("hex")}` as DiffID;
  return { diffId, open: () => createReadStream(path) };
}

/** A stage's layers as the scanner reads them. */
export function stageLayers(state: StageState, blobs: StageBlobs): SbomLayer[] {
  return state.layers.map((rec) => ({ diffId: rec.diffId, digest: rec.descriptor.digest, mediaType: rec.descriptor.mediaType, open: (signal?: AbortSignal) => openLayer(rec, blobs, signal) }));
}

export interface ExtraScanInput {
  plan: StagePlan;
  buildArgs: Readonly<Record<string, string>>;
  stageState: (stage: Stage) => Promise<StageState>;
  blobs: StageBlobs;
  contextDir: string;
  scratchDir: string;
  signal?: AbortSignal;
}

/** What else one image's SBOM scans: each stage BUILDKIT_SBOM_SCAN_STAGE names, then the context if BUILDKIT_SBOM_SCAN_CONTEXT asks. */
export async function extraScans(x: ExtraScanInput): Promise<{ name: string; layers: SbomLayer[] }[]> {
  const out: { name: string; layers: SbomLayer[] }[] = [];
  for (const stage of stagesToScan(x.plan, x.buildArgs)) {
    out.push({ name: `stage ${stage.name ?? stage.index}`, layers: stageLayers(await x.stageState(stage), x.blobs) });
  }
  if (scanContext(x.plan, x.buildArgs)) out.push({ name: "context", layers: [await contextLayer(x.contextDir, x.scratchDir, x.signal)] });
  return out;
}
