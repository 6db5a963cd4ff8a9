/**
 * node:child_process, node:zlib and node:worker_threads, loaded at their first use
 * rather than when the modules that use them are. A fully cached build starts no
 * process, compresses nothing and starts no worker, and the CLI bundle initialises
 * every module it holds at start-up: their
 * static imports cost that build ~1.5 ms (child_process brings node:dgram and node:net
 * along). A builtin once loaded is a lookup in the module cache.
 */
import { createRequire } from "node:module";
import type * as ChildProcessModule from "node:child_process";
import type * as ZlibModule from "node:zlib";
import type * as WorkerThreadsModule from "node:worker_threads";

/**
 * `use` given a require: the CLI bundle's own (CommonJS), or in the ES module library
 * one made for this file (there a static import would do as well: a program using the
 * library does not start per build). An ES module bundle of the library (esbuild's)
 * has a `require` that throws for what it did not bundle: `use` is then given the made
 * one too. For fs/libc.ts's koffi as well.
 */
export function withRequire<T>(use: (req: NodeJS.Require) => T): T {
  if (typeof require === "function") {
    try {
      return use(require);
    } catch {
      // An ES module bundle's stand-in, or a real failure the made require meets again.
    }
  }
  return use(createRequire(import.meta.url));
}

function load(id: string): unknown {
  return withRequire((req) => req(id));
}

export function childProcess(): typeof ChildProcessModule {
  return load("node:child_process") as typeof ChildProcessModule;
}

export function zlib(): typeof ZlibModule {
  return load("node:zlib") as typeof ZlibModule;
}

/** For fs/file-readers.ts, whose workers only a snapshot of many files starts. */
export function workerThreads(): typeof WorkerThreadsModule {
  return load("node:worker_threads") as typeof WorkerThreadsModule;
}
