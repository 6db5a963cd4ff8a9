/**
 * The local cache store: one JSON record per key under DIR/records, the latest
 * record per slot under DIR/slots, layer blobs in the build's content store.
 * Writes are temp + rename (safe with two builds at once); reads verify the record
 * against its key and the layer blob against its digest (hashed once per file
 * identity, see verifyBlob): a corrupt entry is a miss and is removed, never a
 * wrong image.
 */
import { writeFileAtomic } from "../fs-atomic.js";
import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { OciLayout } from "../oci/layout.js";
import { type CacheRecord, type CacheStore, type LookupResult, expired, validRecord } from "./store.js";

function readOptional(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export class LocalCacheStore implements CacheStore {
  readonly name = "local";
  // A key, a slot and a digest's hex are plain names: their paths are these directories
  // joined by hand (path.join, uncompiled yet, cost ~7 us a call, four calls a step).
  private readonly records: string;
  private readonly slots: string;
  private readonly verified: string;

  constructor(
    readonly dir: string,
    private readonly content: OciLayout,
    private readonly ttlSeconds?: number,
  ) {
    this.records = join(dir, "records");
    this.slots = join(dir, "slots");
    this.verified = join(dir, "verified");
  }

  private recordPath(key: string): string {
    return `${this.records}/${key}.json`;
  }

  private slotPath(slot: string): string {
    return `${this.slots}/${slot}.json`;
  }

  async get(key: string, signal?: AbortSignal): Promise<LookupResult> {
    const path = this.recordPath(key);
    // A record, a blob's stat and its marker are a few hundred bytes each, read once per
    // step: read synchronously, as a fully cached rebuild of many steps otherwise spends
    // most of its step time in thread-pool round trips (open, fstat, read, close each).
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      return {};
    }
    let rec: unknown;
    try {
      rec = JSON.parse(text);
    } catch {
      await rm(path, { force: true });
      return { corrupt: "cache record was not valid JSON" };
    }
    if (!validRecord(rec, key)) {
      await rm(path, { force: true });
      return { corrupt: "cache record did not match its key" };
    }
    if (expired(rec, this.ttlSeconds)) return {};
    if (rec.layer) {
      // No blob here: not a local hit, and not corrupt either. A registry cache hit is
      // remembered locally while its layer stays in the registry; the record still
      // explains later misses, and the registry store answers for the layer.
      const id = await this.identity(rec.layer.digest);
      if (id === undefined) return {};
      const problem = await this.verifyBlob(rec.layer.digest, rec.layer.size, id, signal);
      if (problem) {
        await rm(path, { force: true });
        await rm(this.content.blobPath(rec.layer.digest), { force: true });
        await rm(this.verifiedPath(rec.layer.digest), { force: true });
        return { corrupt: `cached layer ${rec.layer.digest.slice(0, 19)} ${problem}` };
      }
    }
    return { hit: { record: rec, source: { kind: "local" }, store: this.name } };
  }

  private verifiedPath(digest: string): string {
    return `${this.verified}/${digest.replace(/^sha256:/, "")}`;
  }

  /**
   * The blob's identity on disk: device, inode, size, and modification and change
   * times in nanoseconds. Any write to the file through the filesystem changes its
   * ctime (which no program can set back), and a replaced file has another inode.
   */
  private async identity(digest: string): Promise<string | undefined> {
    try {
      const st = statSync(this.content.blobPath(digest as never), { bigint: true });
      return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch {
      return undefined;
    }
  }

  /**
   * A cache hit must never hand out bytes that are not what the key promised: the
   * blob (`before`: its identity now) is hashed, once. Its identity then is
   * remembered (DIR/verified/HEX; put() remembers a blob it stores just written),
   * and a later hit on the same, untouched file skips the hashing (for a large layer,
   * most of a fully cached rebuild); a file written, replaced or truncated since is
   * hashed again.
   */
  private async verifyBlob(digest: string, size: number, before: string, signal?: AbortSignal): Promise<string | undefined> {
    const marker = this.verifiedPath(digest);
    if (readOptional(marker) === before) return undefined;
    const problem = await this.hashBlob(digest, size, signal);
    // Remembered only if the file did not change while it was being read.
    if (!problem && (await this.identity(digest)) === before) await this.atomicWrite(marker, before).catch(() => {});
    return problem;
  }

  private async hashBlob(digest: string, size: number, signal?: AbortSignal): Promise<string | undefined> {
    const h = createHash("sha256");
    let n = 0;
    try {
      await pipeline(createReadStream(this.content.blobPath(digest as never), { signal }), async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          h.update(c);
          n += c.length;
        }
      });
    } catch {
      return "is missing";
    }
    if (n !== size) return `has ${n} bytes, expected ${size}`;
    if (`sha256:${h.digest("hex")}` !== digest) return "does not match its digest";
    return undefined;
  }

  async previous(slot: string): Promise<CacheRecord | undefined> {
    try {
      const rec = JSON.parse(await readFile(this.slotPath(slot), "utf8")) as CacheRecord;
      return validRecord(rec, rec.key) ? rec : undefined;
    } catch {
      return undefined;
    }
  }

  async put(record: CacheRecord): Promise<void> {
    const text = JSON.stringify(record);
    // Three files, each written atomically on its own: at the same time, not one after
    // the other (each is a mkdir, an open, a write, a close and a rename; a step ended
    // ~4 ms later when they queued).
    await Promise.all([this.atomicWrite(this.recordPath(record.key), text), this.atomicWrite(this.slotPath(record.slot), text), record.layer && this.markVerified(record.layer.digest)]);
  }

  /**
   * A blob in the content store was hashed as it was written (a layer just built,
   * or one pulled and checked): remembered as verified, so the first hit on it does
   * not hash it again.
   */
  private async markVerified(digest: string): Promise<void> {
    const id = await this.identity(digest);
    if (id !== undefined) await this.atomicWrite(this.verifiedPath(digest), id).catch(() => {});
  }

  private async atomicWrite(path: string, text: string): Promise<void> {
    await writeFileAtomic(path, text, { makeParent: true });
  }
}
