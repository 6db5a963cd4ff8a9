/**
 * The explicit, immutable state of a stage while it is built. Steps take a state
 * and return a new one; nothing here is mutated in place.
 */
import type { DiffID } from "../oci/digest.js";
import type { ContainerConfig, Descriptor, HistoryEntry, ImageConfig, Platform } from "../oci/manifest.js";

/** Where a layer's compressed bytes can be read from. */
export type LayerSource =
  | { kind: "local" } // in the build's content store
  | { kind: "registry"; ref: string }; // in a registry repository (a base image), fetched on demand

export interface LayerRecord {
  readonly descriptor: Descriptor;
  readonly diffId: DiffID;
  readonly source: LayerSource;
  /** A directory holding this layer alone in overlay form, when already materialised. */
  readonly dir?: string;
  /**
   * Set on a layer a step has just made whose blob is still being compressed and
   * written (see deferredLayer): resolves once `descriptor` can be read, and rejects
   * with the write's error. Its DiffID and directory are there from the start.
   */
  readonly written?: Promise<void>;
}

/**
 * A step's new layer, usable by the next step (its DiffID keys that step, its directory
 * is that step's lower layer) while its blob is still being compressed: `blob` gives
 * the descriptor once written. Reading `descriptor` before `written` resolves is an
 * internal error, thrown loudly rather than passing a wrong digest on; a spread of
 * the record reads it too, so it copies nothing unfinished either.
 */
export function deferredLayer(diffId: DiffID, dir: string | undefined, blob: Promise<Descriptor>): LayerRecord {
  let descriptor: Descriptor | undefined;
  const written = blob.then((d) => {
    descriptor = d;
  });
  // The write's failure is the step's: whoever awaits `written` sees it; this only keeps
  // it from being an unhandled rejection in between.
  written.catch(() => {});
  return {
    get descriptor(): Descriptor {
      if (descriptor === undefined) throw new Error(`internal: the descriptor of layer ${diffId} was read before its blob was written`);
      return descriptor;
    },
    diffId,
    source: { kind: "local" },
    ...(dir !== undefined ? { dir } : {}),
    written,
  };
}

/** Resolves once every layer of `layers` has its blob written (LayerRecord.written; rejects with the first write's error). */
export async function layersWritten(layers: readonly LayerRecord[]): Promise<void> {
  await Promise.all(layers.map((l) => l.written));
}

export interface StageState {
  readonly platform: Platform;
  /** The image config so far (rootfs/history are derived from layers/history below). */
  readonly config: ContainerConfig;
  readonly layers: readonly LayerRecord[];
  readonly history: readonly HistoryEntry[];
  /**
   * Values of ARGs declared in this stage or its parent stage (and so visible to its
   * instructions), except those a later ENV of the same name replaced: between the
   * two, the later one is in force for the build (BuildKit keeps one env list).
   */
  readonly args: Readonly<Record<string, string>>;
  /** Base image's author/created etc., carried forward. */
  readonly baseConfig?: ImageConfig;
  /** What the stage was based on, for the report ("scratch", an image reference, "stage build"). */
  readonly baseName: string;
  /** True once CMD was set in this stage (ENTRYPOINT then keeps it; otherwise ENTRYPOINT resets an inherited CMD). */
  readonly cmdSet?: boolean;
  /** MAINTAINER, stored as the image's author. */
  readonly author?: string;
}

export const DEFAULT_SHELL = ["/bin/sh", "-c"];

export function emptyState(platform: Platform): StageState {
  return {
    platform,
    config: { Env: [`PATH=${DEFAULT_PATH_ENV}`] },
    layers: [],
    history: [],
    args: {},
    baseName: "scratch",
  };
}

export const DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The stage's ENV as a record (later entries win). */
export function envRecord(state: StageState): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of state.config.Env ?? []) {
    const i = e.indexOf("=");
    if (i < 0) out[e] = "";
    else out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/**
 * Variables an instruction's arguments are expanded with, and RUN's environment: ENV,
 * with the ARGs in force on top (an ARG set after an ENV of its name wins, as in
 * BuildKit; an ENV set after an ARG removed it from `args`).
 */
export function expansionEnv(state: StageState): Record<string, string> {
  return { ...envRecord(state), ...state.args };
}

export function withConfig(state: StageState, patch: Partial<ContainerConfig>): StageState {
  return { ...state, config: { ...state.config, ...patch } };
}

/** Set KEY in an Env list: replaced in place when present (Docker keeps the order), else appended. */
export function setEnv(env: readonly string[] | undefined, key: string, value: string): string[] {
  const out = [...(env ?? [])];
  const idx = out.findIndex((e) => e === key || e.startsWith(`${key}=`));
  if (idx >= 0) out[idx] = `${key}=${value}`;
  else out.push(`${key}=${value}`);
  return out;
}

export function shellOf(state: StageState): string[] {
  return state.config.Shell && state.config.Shell.length > 0 ? [...state.config.Shell] : [...DEFAULT_SHELL];
}

export function workdirOf(state: StageState): string {
  return state.config.WorkingDir && state.config.WorkingDir !== "" ? state.config.WorkingDir : "/";
}

export function addHistory(state: StageState, entry: HistoryEntry): StageState {
  return { ...state, history: [...state.history, entry] };
}

export function addLayer(state: StageState, layer: LayerRecord, entry: HistoryEntry): StageState {
  return { ...state, layers: [...state.layers, layer], history: [...state.history, { ...entry, empty_layer: undefined }] };
}
