/**
 * One instruction with the cache around it: compute the key from exactly the
 * inputs the step uses, reuse a verified entry when there is one, otherwise run
 * the step and store what it produced. Every step comes back with a report line:
 * cached or built, and for a miss the input that changed.
 */
import { createHash } from "node:crypto";
import type { Stats } from "node:fs";
import { posix } from "node:path";
import { expandInstruction, type Instruction } from "../dockerfile/index.js";
import { cacheKey, explainMiss, KEY_VERSION, type KeyInputs } from "../cache/key.js";
import type { Redactor } from "../cache/redact.js";
import type { HistoryEntry } from "../oci/manifest.js";
import type { CacheHit, CacheRecord, CacheStore } from "../cache/store.js";
import { formatPlatform } from "../oci/platform.js";
import { chainId } from "./fs/layer-store.js";
import { withRootView } from "./fs/step-root.js";
import { fileOwner } from "./users.js";
import { addHistory, addLayer, envRecord, expansionEnv, shellOf, withConfig, workdirOf, type LayerRecord, type StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";
import type { ArgSources } from "./steps/arg.js";
import { copyKeyFiles, executeCopy, prepareCopy, type CopyPrep } from "./steps/copy.js";
import { hashMatches } from "./fs/copy-tree.js";
import { parseMounts, type MountSpec } from "./mounts.js";
import { selectSources } from "./sources.js";
import { executeStep } from "./steps/index.js";
import { runArgs } from "./steps/run.js";

export interface CacheContext {
  /** Stores in lookup order (local first). Empty: no cache at all. */
  stores: CacheStore[];
  /** Skip lookups (--no-cache). */
  noLookup: boolean;
  /** Skip writes (--no-cache-write). */
  noWrite: boolean;
  /** Compute and report only, executing nothing that touches a filesystem (--dry-run). */
  dryRun: boolean;
  hashFile: (path: string, st: Stats) => Promise<string>;
  /** Final ChainIDs of stages, for COPY --from keys. */
  stageChain: (nameOrIndex: string) => Promise<string> | undefined;
  /** Seals secret build-arg values in what a record stores (its key inputs, its history text). */
  redactor: Redactor;
}

export interface StepOutcome {
  state: StageState;
  key: string;
  cached: boolean;
  reason?: string;
  /** Seconds the step took when it was built (for hits: saved). */
  savedSeconds: number;
  reusedBytes: number;
  /** Dry run: the step's result is unknown (it would run). */
  unknown?: boolean;
  /** The step as the report shows it: RUN as written, the others expanded. */
  instruction: string;
}

const FS_KINDS = new Set(["run", "copy", "add", "workdir"]);

export function layerChain(state: StageState): string {
  return state.layers.length === 0 ? "" : chainId(state.layers.map((l) => l.diffId));
}

export function slotOf(project: string, stage: string, index: number, platform: string): string {
  return createHash("sha256").update(`${project}\n${stage}\n${index}\n${platform}`).digest("hex");
}

interface StepSpec {
  inputs: KeyInputs;
  /** Run the step for real. */
  execute: () => Promise<StageState>;
  /** The state a hit leads to. */
  applyHit: (rec: CacheRecord, layer: LayerRecord | undefined) => StageState;
}

async function fsSpec(state: StageState, instr: Instruction, ctx: StepContext, cache: CacheContext, args: ArgSources, step: number, base: string): Promise<StepSpec> {
  const platform = formatPlatform(state.platform);
  const common = { v: KEY_VERSION, platform, parent: layerChain(state), base };
  const hitWith = (s: StageState) => (rec: CacheRecord, layer: LayerRecord | undefined) =>
    layer ? addLayer(s, layer, rec.history) : addHistory(s, { ...rec.history, empty_layer: true });
  switch (instr.kind) {
    case "run": {
      const flags = [instr.network ? `--network=${instr.network}` : "", instr.security ? `--security=${instr.security}` : "", ...instr.mounts.map((m) => `--mount=${m}`)].filter(Boolean);
      const mounted = await mountKeyInputs(instr.mounts, ctx, cache, state);
      return {
        inputs: {
          ...common,
          ...mounted,
          instruction: ["RUN", ...flags, JSON.stringify(runArgs(state, instr))].join(" "),
          shell: shellOf(state),
          user: state.config.User ?? "",
          workdir: workdirOf(state),
          env: envRecord(state),
          args: { ...state.args },
          network: instr.network ?? ctx.defaultNetwork,
        },
        execute: () => executeStep(state, instr, ctx, args, step),
        applyHit: hitWith(state),
      };
    }
    case "workdir": {
      const dir = posix.resolve(workdirOf(state), instr.path);
      const next = withConfig(state, { WorkingDir: dir });
      return {
        inputs: { ...common, instruction: `WORKDIR ${dir}`, user: state.config.User ?? "" },
        execute: () => executeStep(state, instr, ctx, args, step),
        applyHit: hitWith(next),
      };
    }
    case "copy":
    case "add": {
      const prep: CopyPrep = await prepareCopy(state, instr, ctx);
      // COPY --link: the layer is made on an empty tree, so its key does not chain on the layers below.
      const inputs: KeyInputs = { ...common, ...(instr.link ? { parent: "link", base: "link" } : {}), instruction: prep.text, workdir: workdirOf(state) };
      if (prep.from === undefined) inputs.files = await copyKeyFiles(prep, ctx, cache.hashFile);
      else {
        const chain = cache.stageChain(prep.from);
        inputs.source = chain ? `stage:${await chain}` : `image:${(await ctx.image(prep.from, state.platform)).baseName}`;
      }
      return { inputs, execute: () => (instr.link ? linkedCopy(state, prep, ctx) : executeCopy(state, prep, ctx)), applyHit: hitWith(state) };
    }
    default:
      throw new Error(`not a filesystem step: ${instr.kind}`);
  }
}

/**
 * What RUN --mount contributes to the key: the content of bind sources from the
 * context, and the identity of stages or images mounted from. Cache mounts,
 * tmpfs, secrets and ssh sockets never enter the key (their ids are in the text).
 */
async function mountKeyInputs(specs: readonly string[], ctx: StepContext, cache: CacheContext, state: StageState): Promise<Pick<KeyInputs, "files" | "source">> {
  if (specs.length === 0) return {};
  let parsed: MountSpec[];
  try {
    parsed = parseMounts(specs);
  } catch {
    return {}; // the step itself reports the bad spec with its line
  }
  const files: Record<string, string> = {};
  const sources: string[] = [];
  for (const m of parsed) {
    if (m.type !== "bind" && !(m.type === "cache" && m.from !== undefined)) continue;
    if (m.from === undefined) {
      const matches = await selectSources(ctx.context, m.source);
      for (const [k, v] of Object.entries(await hashMatches(ctx.context, matches, cache.hashFile, { signal: ctx.signal }))) files[`mount ${m.target}: ${k}`] = v;
    } else {
      const chain = cache.stageChain(m.from);
      sources.push(`${m.target}=${chain ? `stage:${await chain}` : `image:${(await ctx.image(m.from, state.platform)).baseName}`}`);
    }
  }
  return { ...(Object.keys(files).length > 0 ? { files } : {}), ...(sources.length > 0 ? { source: sources.join(";") } : {}) };
}

/**
 * COPY --link: copy onto an empty tree and put the result on top of the stage as
 * an independent layer (BuildKit's semantics). Names in --chown are resolved in
 * the stage's own /etc/passwd first, since the empty tree has none.
 */
async function linkedCopy(state: StageState, prep: CopyPrep, ctx: StepContext): Promise<StageState> {
  let p = prep;
  if (prep.chown !== undefined && !/^\d+(:\d+)?$/.test(prep.chown)) {
    const spec = prep.chown;
    const ids = await withRootView(state, ctx, async (root) => {
      const o = await fileOwner(root, spec, { signal: ctx.signal });
      return `${o.uid}:${o.gid}`;
    });
    p = { ...prep, chown: ids };
  }
  const alone = await executeCopy({ ...state, layers: [], history: [] }, p, ctx);
  const layer = alone.layers[0];
  const entry = alone.history[alone.history.length - 1]!;
  return layer ? addLayer(state, layer, entry) : addHistory(state, { ...entry, empty_layer: true });
}

/** Lookup in each store, in order; a corrupt entry is reported and skipped. */
async function lookup(cache: CacheContext, key: string, ctx: StepContext) {
  let corrupt: string | undefined;
  for (const store of cache.stores) {
    const r = await store.get(key, ctx.signal);
    if (r.corrupt) {
      corrupt = r.corrupt;
      ctx.emit({ type: "log", level: "warn", message: `${store.name} cache: ${r.corrupt}; removed, the step is rebuilt` });
    }
    if (r.hit) {
      // A registry hit is remembered locally (the layer stays in the registry until needed).
      if (store !== cache.stores[0] && !cache.noWrite) await cache.stores[0]?.put(r.hit.record, ctx.signal).catch(() => {});
      return { hit: r.hit, corrupt };
    }
  }
  return { corrupt };
}

async function previousFor(cache: CacheContext, slot: string, ctx: StepContext): Promise<CacheRecord | undefined> {
  for (const store of cache.stores) {
    const p = await store.previous(slot, ctx.signal).catch(() => undefined);
    if (p) return p;
  }
  return undefined;
}

async function store(cache: CacheContext, rec: CacheRecord, ctx: StepContext): Promise<void> {
  if (cache.noWrite || cache.dryRun) return;
  for (const s of cache.stores) {
    try {
      await s.put(rec, ctx.signal);
    } catch (e) {
      ctx.emit({ type: "log", level: "warn", message: `could not write the ${s.name} cache entry: ${(e as Error).message}` });
    }
  }
}

export async function cachedStep(
  state: StageState,
  instr: Instruction,
  ctx: StepContext,
  cache: CacheContext,
  opts: { args: ArgSources; step: number; slot: string; prevKey: string; base: string; parentUnknown: boolean },
): Promise<StepOutcome> {
  const started = performance.now();
  // Expand once, exactly the arguments BuildKit expands; every step and key below sees the result.
  const raw = instr;
  instr = instr.kind === "arg" ? instr : expandInstruction(instr, { env: expansionEnv(state), escapeToken: ctx.escapeToken });
  let spec: StepSpec;
  let metaState: StageState | undefined;
  if (FS_KINDS.has(instr.kind)) {
    spec = await fsSpec(state, instr, ctx, cache, opts.args, opts.step, opts.base);
  } else {
    // Metadata steps are pure and cheap: always run; the key chains on the previous step.
    metaState = await executeStep(state, instr, ctx, opts.args, opts.step);
    const text = metaState.history[metaState.history.length - 1]?.created_by ?? instr.original;
    const done = metaState;
    const inputs: KeyInputs = { v: KEY_VERSION, platform: formatPlatform(state.platform), parent: opts.prevKey, base: opts.base, instruction: text };
    if (instr.kind === "arg") {
      // An ARG's key is its text as written plus the values it takes, so a changed value is named.
      inputs.instruction = raw.original;
      inputs.args = Object.fromEntries(instr.args.filter((a) => Object.hasOwn(done.args, a.key)).map((a) => [a.key, done.args[a.key]!]));
    }
    spec = {
      inputs,
      execute: async () => done,
      applyHit: (rec) => ({ ...done, history: [...done.history.slice(0, -1), rec.history] }),
    };
  }
  // Stored and keyed sealed: a secret build arg's value is only in the key as its hash.
  const inputs: KeyInputs = sealInputs(spec.inputs, cache.redactor);
  const key = cacheKey(inputs);
  const shown =
    instr.kind === "run"
      ? `RUN ${instr.command.form === "exec" ? JSON.stringify(instr.command.args) : instr.command.text.replace(/\s+/g, " ").trim()}`
      : metaState?.history[metaState.history.length - 1]?.created_by ?? spec.inputs.instruction;
  const found: { hit?: CacheHit; corrupt?: string } = cache.noLookup ? {} : await lookup(cache, key, ctx);
  if (found.hit) {
    const stored = found.hit.record;
    const rec = { ...stored, history: mapCreatedBy(stored.history, (t) => cache.redactor.unseal(t)) };
    let layer: LayerRecord | undefined = rec.layer
      ? {
          descriptor: { mediaType: rec.layer.mediaType, digest: rec.layer.digest, size: rec.layer.size },
          diffId: rec.layer.diffId,
          source: found.hit.source,
        }
      : undefined;
    // An entry written by a build with another compression (gzip, where this one writes zstd): its layer is re-compressed, the step not rebuilt.
    if (layer && ctx.converter && !cache.dryRun) layer = await ctx.converter.convert(layer);
    return { state: spec.applyHit(rec, layer), key, cached: true, savedSeconds: rec.seconds, reusedBytes: rec.layer?.size ?? 0, instruction: shown };
  }
  let reason: string;
  if (cache.noLookup) reason = "cache disabled (--no-cache)";
  else if (found.corrupt) reason = `${found.corrupt}`;
  else if (opts.parentUnknown && FS_KINDS.has(instr.kind)) reason = "parent step rebuilt";
  else {
    const prev = await previousFor(cache, opts.slot, ctx);
    reason = prev ? explainMiss(prev.inputs, inputs) : "no previous entry";
  }
  if (cache.dryRun && FS_KINDS.has(instr.kind)) {
    return { state, key, cached: false, reason, savedSeconds: 0, reusedBytes: 0, unknown: true, instruction: shown };
  }
  const executed = await spec.execute();
  const seconds = (performance.now() - started) / 1000;
  const added = executed.layers.length > state.layers.length ? executed.layers[executed.layers.length - 1]! : undefined;
  // The step's history entry carries the time it was built; a later hit reuses it, so a
  // fully cached rebuild yields the same config, and so the same image digest.
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const last = executed.history[executed.history.length - 1] ?? { created_by: instr.original };
  const history = { created, created_by: last.created_by, comment: last.comment, ...(added ? {} : { empty_layer: true }) };
  const next: StageState = { ...executed, history: [...executed.history.slice(0, -1), history] };
  const rec: CacheRecord = { key, slot: opts.slot, inputs, history: mapCreatedBy(history, (t) => cache.redactor.seal(t)), seconds, created };
  if (added) rec.layer = { mediaType: added.descriptor.mediaType, digest: added.descriptor.digest, diffId: added.diffId, size: added.descriptor.size };
  await store(cache, rec, ctx);
  return { state: next, key, cached: false, reason, savedSeconds: 0, reusedBytes: 0, instruction: shown };
}

function sealInputs(i: KeyInputs, r: Redactor): KeyInputs {
  return { ...i, instruction: r.seal(i.instruction), env: r.sealVariables(i.env), args: r.sealVariables(i.args) };
}

function mapCreatedBy(h: HistoryEntry, f: (text: string) => string): HistoryEntry {
  return h.created_by === undefined ? h : { ...h, created_by: f(h.created_by) };
}
