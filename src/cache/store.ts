/**
 * Cache entries and the store interface. An entry records what a step produced
 * (its layer, if any, and its history entry) under the step's key, together with
 * the key's inputs (to explain later misses) and how long the step took.
 */
import type { DiffID, Digest } from "../oci/digest.js";
import type { HistoryEntry } from "../oci/manifest.js";
import { cacheKey, type KeyInputs } from "./key.js";

export interface CachedLayer {
  mediaType: string;
  digest: Digest;
  diffId: DiffID;
  size: number;
}

export interface CacheRecord {
  key: string;
  /** Identifies "the same step" across builds, for explaining misses. */
  slot: string;
  inputs: KeyInputs;
  layer?: CachedLayer;
  history: HistoryEntry;
  seconds: number;
  /** ISO time the entry was written. */
  created: string;
}

/** Where a hit's layer bytes are. */
export type HitSource = { kind: "local" } | { kind: "registry"; ref: string };

export interface CacheHit {
  record: CacheRecord;
  source: HitSource;
  /** Which store answered ("local", "registry"). */
  store: string;
}

export interface LookupResult {
  hit?: CacheHit;
  /** Set when an entry existed but was corrupt (and was removed). */
  corrupt?: string;
}

export interface CacheStore {
  readonly name: string;
  get(key: string, signal?: AbortSignal): Promise<LookupResult>;
  /** The latest entry written for this slot, if any. */
  previous(slot: string, signal?: AbortSignal): Promise<CacheRecord | undefined>;
  put(record: CacheRecord, signal?: AbortSignal): Promise<void>;
}

/** A store read but never written (kaniko's --no-push-cache for --cache-repo). */
export function readOnlyStore(store: CacheStore): CacheStore {
  return { name: store.name, get: (k, sig) => store.get(k, sig), previous: (slot, sig) => store.previous(slot, sig), put: async () => {} };
}

/** Structural checks shared by every store: the record is what its key says. */
export function validRecord(r: unknown, key: string): r is CacheRecord {
  if (typeof r !== "object" || r === null) return false;
  const rec = r as CacheRecord;
  if (rec.key !== key || typeof rec.slot !== "string" || typeof rec.inputs !== "object" || rec.inputs === null) return false;
  if (cacheKey(rec.inputs) !== key) return false;
  if (typeof rec.history !== "object" || typeof rec.seconds !== "number" || typeof rec.created !== "string") return false;
  if (rec.layer !== undefined) {
    const l = rec.layer;
    if (!/^sha256:[a-f0-9]{64}$/.test(l.digest) || !/^sha256:[a-f0-9]{64}$/.test(l.diffId) || typeof l.size !== "number") return false;
  }
  return true;
}

export function expired(r: CacheRecord, ttlSeconds: number | undefined, now = Date.now()): boolean {
  if (ttlSeconds === undefined) return false;
  const t = Date.parse(r.created);
  return !Number.isFinite(t) || now - t > ttlSeconds * 1000;
}
