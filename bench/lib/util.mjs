// Small helpers shared by the benchmark: child processes with timing, medians,
// a seeded random generator, and atomic writes. Plain ESM (no build step).
import { spawn } from "node:child_process";
import { rename, writeFile, mkdir, rm } from "node:fs/promises";
import { dirname } from "node:path";

/** Thrown when a command the harness runs fails; keeps the tail of its output. */
export class BenchError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/**
 * Runs `cmd args`, collecting stdout/stderr (the last 64 KiB of each), and resolves
 * with { code, stdout, stderr, ms }. Rejects with BenchError BENCH_COMMAND_FAILED
 * on a non-zero exit unless `allowFail`.
 */
export function run(cmd, args, opts = {}) {
  const { cwd, env, input, allowFail = false, signal, onStdout } = opts;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { cwd, env: env ?? process.env, stdio: ["pipe", "pipe", "pipe"], signal });
    let stdout = "";
    let stderr = "";
    const keep = (s) => (s.length > 65536 ? s.slice(-65536) : s);
    child.stdout.on("data", (d) => {
      onStdout?.(d);
      stdout = keep(stdout + d);
    });
    child.stderr.on("data", (d) => (stderr = keep(stderr + d)));
    child.on("error", (e) => reject(new BenchError("BENCH_COMMAND_FAILED", `${cmd}: ${e.message}`, { cause: e })));
    child.on("close", (code, sig) => {
      const ms = performance.now() - started;
      if ((code !== 0 || sig) && !allowFail) {
        const tail = (stderr || stdout).split("\n").slice(-25).join("\n");
        reject(new BenchError("BENCH_COMMAND_FAILED", `${cmd} ${args.join(" ")} exited with ${code ?? sig}:\n${tail}`, { code, stdout, stderr }));
        return;
      }
      resolve({ code, stdout, stderr, ms });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Whether `name` is an executable on PATH. */
export async function which(name) {
  const r = await run("sh", ["-c", `command -v ${name}`], { allowFail: true });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

export function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** mulberry32: a small deterministic PRNG, so generated contexts are the same on every machine. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bytes from the PRNG (incompressible). */
export function randomBuffer(rand, size) {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((rand() * 4294967296) >>> 0, i);
  for (let i = size - (size % 4); i < size; i++) b[i] = (rand() * 256) | 0;
  return b;
}

const WORDS = "import def return self class value data request response config logger cache error result items index none true false async await yield lambda from with for while if else elif try except finally raise pass".split(" ");

/** Source-like text (compresses like code does, about 4:1 with gzip -6). */
export function textBuffer(rand, size) {
  const parts = [];
  let n = 0;
  while (n < size) {
    const indent = "    ".repeat((rand() * 3) | 0);
    let line = indent;
    const words = 3 + ((rand() * 8) | 0);
    for (let i = 0; i < words; i++) line += WORDS[(rand() * WORDS.length) | 0] + (rand() < 0.3 ? `_${(rand() * 1000) | 0}` : "") + " ";
    line += "\n";
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join("")).subarray(0, size);
}

/** Write `data` to `path` through a temp name and a rename (never a half-written file). */
export async function writeAtomic(path, data) {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export const fmtSec = (ms) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)}s` : "-");
export const fmtRatio = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}x` : "-");
export const say = (m) => process.stderr.write(`bench: ${m}\n`);

/**
 * apt-get install PKG (as root only), waiting for another apt/dpkg to let go of its
 * lock, with one `apt-get update` if the package is unknown. Resolves true when installed.
 */
export async function aptInstall(pkg, signal) {
  if (process.getuid?.() !== 0) return false;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  let updated = false;
  for (let attempt = 0; attempt < 40; attempt++) {
    const r = await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", pkg], { env, allowFail: true, signal });
    if (r.code === 0) return true;
    const out = r.stderr + r.stdout;
    if (/Could not get lock|Unable to acquire the dpkg/.test(out)) {
      await new Promise((res) => setTimeout(res, 5000));
      continue;
    }
    if (!updated && /Unable to locate package|Failed to fetch|404/.test(out)) {
      updated = true;
      await run("apt-get", ["update", "-qq"], { env, allowFail: true, signal });
      continue;
    }
    throw new BenchError("BENCH_APT_FAILED", `apt-get install ${pkg} failed:\n${out.trim().split("\n").slice(-5).join("\n")}`);
  }
  throw new BenchError("BENCH_APT_FAILED", `apt-get install ${pkg}: the dpkg lock stayed taken`);
}
