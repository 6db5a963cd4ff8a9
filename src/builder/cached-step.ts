/**
 * One instruction with the cache around it: compute the key from exactly the
 * inputs the step uses, reuse a verified entry when there is one, otherwise run
 * the step and store what it produced. Every step comes back with a report line:
 * cached or built, and for a miss the input that changed.
 */
import { createHash } from "node:crypto";
import { expandInstruction, type Instruction } from "../dockerfile/index.js";
import { cacheKey, explainMiss, KEY_VERSION, type KeyInputs } from "../cache/key.js";
import type { Redactor } from "../cache/redact.js";
import type { HistoryEntry } from "../oci/manifest.js";
import type { CacheHit, CacheRecord, CacheStore } from "../cache/store.js";
import { formatPlatform } from "../oci/platform.js";
import { monotonicMs } from "../clock.js";
import { chainId, type ChainMemo } from "./fs/layer-store.js";
import { layersExtracted } from "./fs/step-root.js";
import { expansionEnv, type LayerRecord, type StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";
import { stepFor, type ArgSources, type KeySources, type StepPlan } from "./steps/index.js";

export interface CacheContext extends KeySources {
  /** Stores in lookup order (local first). Empty: no cache at all. */
  stores: CacheStore[];
  /**
   * Skip lookups and rebuild (the noCache option; the noCacheFilter option for the
   * named stages' steps): the reason a step then gives for its miss. False: look up.
   */
  noLookup: string | false;
  /** Skip writes (--no-cache-write). */
  noWrite: boolean;
  /** Compute and report only, executing nothing that touches a filesystem (--dry-run). */
  dryRun: boolean;
  /** Seals secret build-arg values in what a record stores (its key inputs, its history text). */
  redactor: Redactor;
  /**
   * The build's chain IDs so far ("PARENT DIFFID" -> chain ID): step N of a stage keys on the
   * chain of its N layers, which is step N-1's chain and one hash, not N hashes again.
   */
  chains?: ChainMemo;
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
  /**
   * A built step: resolves once its layer's blob is written (LayerRecord.written) and its
   * cache record stored, which may be after the next step started; rejects with the
   * blob write's error. Whoever runs the steps awaits it before the stage is done.
   */
  settled?: Promise<void>;
}

export function layerChain(state: StageState, memo?: ChainMemo): string {
  return state.layers.length === 0 ? "" : chainId(state.layers.map((l) => l.diffId), memo);
}

export function slotOf(project: string, stage: string, index: number, platform: string): string {
  return createHash("sha256").update(`${project}\n${stage}\n${index}\n${platform}`).digest("hex");
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
  const started = monotonicMs();
  const step = stepFor(instr);
  // Expand once, exactly the arguments BuildKit expands (ARG expands its own defaults); the step and its key see the result.
  const expanded = expandInstruction(instr, { env: expansionEnv(state), escapeToken: ctx.escapeToken });
  const plan = await step.plan(state, expanded, { ctx, keys: cache, args: opts.args, step: opts.step });
  const own: KeyInputs = { v: KEY_VERSION, platform: formatPlatform(state.platform), parent: step.layered ? layerChain(state, cache.chains) : opts.prevKey, base: opts.base, ...plan.inputs };
  // Stored and keyed sealed: a secret build arg's value is only in the key as its hash.
  const inputs = sealInputs(own, cache.redactor);
  const key = cacheKey(inputs);
  const found: { hit?: CacheHit; corrupt?: string } = cache.noLookup ? {} : await lookup(cache, key, ctx);
  if (found.hit) return hitOutcome(plan, found.hit, key, cache, ctx);
  const miss = { key, cached: false, savedSeconds: 0, reusedBytes: 0, instruction: plan.shown };
  const reason = await missReason(cache, found.corrupt, step.layered && opts.parentUnknown, opts.slot, inputs, ctx);
  if (cache.dryRun && step.layered) return { ...miss, state, reason, unknown: true };
  const executed = await executeChecked(plan, state, ctx);
  const built = storeBuilt(state, executed, instr, cache, ctx, { key, slot: opts.slot, inputs, started });
  return { ...miss, state: built.state, settled: built.stored, reason };
}

/**
 * A missed step's execution, with the push-permission check (ctx.beforeWork) made first:
 * a step doing local work only (StepPlan.local) on a root whose layers are all extracted
 * runs while the check's round trips are made, and ends with the check's error when it
 * fails (which also wins over the step's own); any other step waits for the check.
 */
async function executeChecked(plan: StepPlan, state: StageState, ctx: StepContext): Promise<StageState> {
  const check = ctx.beforeWork?.();
  if (check === undefined) return plan.execute();
  if (!plan.local || !(await layersExtracted(state.layers, ctx))) {
    await check;
    return plan.execute();
  }
  let executed: StageState;
  try {
    executed = await plan.execute();
  } catch (e) {
    await check;
    throw e;
  }
  await check;
  return executed;
}

/** A hit: the entry's layer (fetched when needed) and history, with secret values put back. */
async function hitOutcome(plan: StepPlan, hit: CacheHit, key: string, cache: CacheContext, ctx: StepContext): Promise<StepOutcome> {
  const rec = { ...hit.record, history: mapCreatedBy(hit.record.history, (t) => cache.redactor.unseal(t)) };
  let layer: LayerRecord | undefined = rec.layer
    ? { descriptor: { mediaType: rec.layer.mediaType, digest: rec.layer.digest, size: rec.layer.size }, diffId: rec.layer.diffId, source: hit.source }
    : undefined;
  // An entry written by a build with another compression (gzip, where this one writes zstd): its layer is re-compressed, the step not rebuilt.
  if (layer && ctx.converter?.needs(layer) && !cache.dryRun) {
    await ctx.beforeWork?.();
    layer = await ctx.converter.convert(layer);
  }
  return { state: plan.applyHit(rec.history, layer), key, cached: true, savedSeconds: rec.seconds, reusedBytes: rec.layer?.size ?? 0, instruction: plan.shown };
}

/** Why a step missed: the input that changed since the nearest previous entry of its slot. */
async function missReason(cache: CacheContext, corrupt: string | undefined, parentRebuilt: boolean, slot: string, inputs: KeyInputs, ctx: StepContext): Promise<string> {
  if (cache.noLookup) return cache.noLookup;
  if (corrupt) return corrupt;
  if (parentRebuilt) return "parent step rebuilt";
  const prev = await previousFor(cache, slot, ctx);
  return prev ? explainMiss(prev.inputs, inputs) : "no previous entry";
}

/**
 * A built step's cache record, stored: the layer it added, and its history entry,
 * which carries the time it was built (a later hit reuses it, so a fully cached
 * rebuild yields the same config, and so the same image digest). Returns the state
 * with that entry at once, and the store, made once the layer's blob is written
 * (`stored`; the time the record keeps runs until then).
 */
function storeBuilt(
  before: StageState,
  executed: StageState,
  instr: Instruction,
  cache: CacheContext,
  ctx: StepContext,
  r: Pick<CacheRecord, "key" | "slot" | "inputs"> & { started: number },
): { state: StageState; stored: Promise<void> } {
  const added = executed.layers.length > before.layers.length ? executed.layers[executed.layers.length - 1]! : undefined;
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const last = executed.history[executed.history.length - 1] ?? { created_by: instr.original };
  const history = { created, created_by: last.created_by, comment: last.comment, ...(added ? {} : { empty_layer: true }) };
  const stored = (async () => {
    await added?.written;
    const seconds = (monotonicMs() - r.started) / 1000;
    const rec: CacheRecord = { key: r.key, slot: r.slot, inputs: r.inputs, history: mapCreatedBy(history, (t) => cache.redactor.seal(t)), seconds, created };
    if (added) rec.layer = { mediaType: added.descriptor.mediaType, digest: added.descriptor.digest, diffId: added.diffId, size: added.descriptor.size };
    await store(cache, rec, ctx);
  })();
  // Awaited by the stage runner; this keeps a failure from being unhandled until then.
  stored.catch(() => {});
  return { state: { ...executed, history: [...executed.history.slice(0, -1), history] }, stored };
}

function sealInputs(i: KeyInputs, r: Redactor): KeyInputs {
  return { ...i, instruction: r.seal(i.instruction), env: r.sealVariables(i.env), args: r.sealVariables(i.args) };
}

function mapCreatedBy(h: HistoryEntry, f: (text: string) => string): HistoryEntry {
  return h.created_by === undefined ? h : { ...h, created_by: f(h.created_by) };
}
