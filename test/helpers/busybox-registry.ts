/**
 * What most end-to-end suites start with: a registry on a free loopback port, a work
 * directory, and the busybox base pushed to it. Registers its own beforeAll/afterAll;
 * the returned object is filled in once beforeAll has run.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { startRegistry, type TestRegistry } from "./registry.js";

export interface BusyboxRegistry {
  reg: TestRegistry;
  /** A temp directory removed after the suite. */
  work: string;
  /** The busybox base's reference in `reg`. */
  base: string;
  /** The cache directory the base was built with (reuse it to share the base's layers). */
  cacheDir: string;
}

export function useBusyboxRegistry(prefix: string): BusyboxRegistry {
  const f = {} as BusyboxRegistry;
  beforeAll(async () => {
    f.reg = await startRegistry();
    f.work = await mkdtemp(join(tmpdir(), `ocibuild-${prefix}-`));
    f.base = `${f.reg.host}/base/busybox:latest`;
    f.cacheDir = join(f.work, "cache");
    await pushBusyboxBase({ reference: f.base, workDir: join(f.work, "base"), cacheDir: f.cacheDir });
  }, 120_000);
  afterAll(async () => {
    await f.reg?.stop();
    if (f.work) await rm(f.work, { recursive: true, force: true });
  });
  return f;
}
