/**
 * Runs the tar reader on hostile inputs in a worker thread, so that a reader
 * which spins (a microtask loop starves the event loop: no timer, no signal gets
 * through) or grows without bound fails the test instead of hanging or killing
 * the test process. The worker gets src/builder/fs/tar-reader.ts bundled by esbuild
 * (the tests run the sources, which a worker thread cannot load as they are); it
 * is terminated when a case takes longer than `caseTimeoutMs`, and its V8 heap
 * is capped.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { build } from "esbuild";

export interface EntrySummary {
  name: string;
  type: string;
  size: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string;
  /** Body bytes actually read (-1 when the body was skipped unread). */
  body: number;
}

export type ReadOutcome =
  | { kind: "ok"; entries: EntrySummary[] }
  /** An error thrown by the reader: `name` is "OcibuildError" for a coded one. */
  | { kind: "error"; name: string; code?: string; message: string };

const here = dirname(fileURLToPath(import.meta.url));
const READER = join(here, "../../src/builder/fs/tar-reader.ts");

// CommonJS (eval'd worker), loading the bundled reader with import().
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  const { readTar } = await import(workerData.module);
  const { cases, chunk } = workerData;
  for (let i = 0; i < cases.length; i++) {
    const buf = Buffer.from(cases[i]);
    const size = chunk > 0 ? chunk : Math.max(1, buf.length);
    async function* input() { for (let o = 0; o < buf.length; o += size) yield buf.subarray(o, o + size); }
    let out;
    try {
      const entries = [];
      let n = 0;
      for await (const e of readTar(input())) {
        const h = e.header;
        // Bodies read three ways in turn: iterated, taken whole if buffered, skipped.
        const how = (i + n++) % 3;
        let body = -1;
        if (how === 0) { body = 0; for await (const c of e.body) body += c.length; }
        else if (how === 1) { const w = e.takeBuffered(); if (w === undefined) { body = 0; for await (const c of e.body) body += c.length; } else body = w.length; }
        entries.push({ name: h.name, type: h.type, size: h.size, uid: h.uid, gid: h.gid, mtime: h.mtime.getTime(), linkname: h.linkname, body });
      }
      out = { kind: "ok", entries };
    } catch (e) {
      out = { kind: "error", name: e && e.name, code: e && e.code, message: String(e && e.message) };
    }
    parentPort.postMessage({ i, out, arrayBuffers: process.memoryUsage().arrayBuffers });
  }
})().catch((e) => parentPort.postMessage({ fatal: String(e && e.stack) }));
`;

export interface IsolatedOptions {
  /** Longest a single case may take before the reader is declared hung. */
  caseTimeoutMs?: number;
  /** Feed the input in chunks of this many bytes (0: whole). */
  chunk?: number;
  /** Cap on the worker's V8 heap. */
  heapMb?: number;
  /** Most Buffer memory the worker may hold after a case. */
  maxArrayBuffersMb?: number;
}

/** Read each case with readTar in a fresh worker; one outcome per case, in order. */
export async function readTarIsolated(cases: Buffer[], opts: IsolatedOptions = {}): Promise<ReadOutcome[]> {
  const dir = await mkdtemp(join(tmpdir(), "ocibuild-tar-isolated-"));
  try {
    const bundle = await build({ entryPoints: [READER], bundle: true, platform: "node", format: "esm", write: false, logLevel: "silent" });
    const module = join(dir, "rootfs-tar.mjs");
    await writeFile(module, bundle.outputFiles[0]!.text);
    return await runWorker(cases, pathToFileURL(module).href, opts);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function runWorker(cases: Buffer[], module: string, opts: IsolatedOptions): Promise<ReadOutcome[]> {
  const caseTimeoutMs = opts.caseTimeoutMs ?? 5000;
  const maxBuffers = (opts.maxArrayBuffersMb ?? 256) * 1024 * 1024;
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: { module, cases: cases.map((c) => new Uint8Array(c)), chunk: opts.chunk ?? 0 },
    resourceLimits: { maxOldGenerationSizeMb: opts.heapMb ?? 256 },
  });
  const outcomes: ReadOutcome[] = [];
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout;
    const fail = (why: string) => {
      clearTimeout(timer);
      void worker.terminate();
      reject(new Error(`tar case ${outcomes.length} of ${cases.length}: ${why}`));
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => fail(`no result after ${caseTimeoutMs} ms (the reader hangs)`), caseTimeoutMs);
    };
    arm();
    worker.on("message", (m: { i: number; out: ReadOutcome; arrayBuffers: number } | { fatal: string }) => {
      if ("fatal" in m) return fail(m.fatal);
      if (m.arrayBuffers > maxBuffers) return fail(`the worker holds ${m.arrayBuffers} bytes of buffers`);
      outcomes.push(m.out);
      if (outcomes.length < cases.length) return arm();
      clearTimeout(timer);
      void worker.terminate().then(() => resolve(outcomes));
    });
    worker.on("error", (e) => fail(`the worker died: ${e.message}`));
    worker.on("exit", (code) => {
      if (outcomes.length < cases.length) fail(`the worker exited (${code})`);
    });
  });
}
