// Reads V8 .cpuprofile files (node --cpu-prof) and sums sample time per function
// and per source file, so a profile can be read as "where did ocibuild's time go".
import { readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";

function label(node, repoRoot) {
  const f = node.callFrame;
  let url = f.url || "";
  if (url.startsWith("file://")) url = url.slice(7);
  if (repoRoot && url.startsWith(repoRoot)) url = relative(repoRoot, url);
  const fn = f.functionName || "(anonymous)";
  return { fn, file: url || `(${fn})`, key: url ? `${url}:${f.lineNumber + 1} ${fn}` : fn };
}

/**
 * Summarises one profile: total sampled ms, idle ms (waiting on I/O and child
 * processes), self ms per function (top N), and ms per file, where a sample
 * counts for the deepest frame of ocibuild's own code (dist/) on its stack,
 * so a call into zlib or fs from layer.js is charged to layer.js (byFile), and
 * to the function of layer.js that made it (byFunction).
 */
export async function summariseProfile(path, repoRoot, top = 15) {
  const p = JSON.parse(await readFile(path, "utf8"));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  const self = new Map();
  const ownFile = new Map();
  const ownFn = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, ms] of dt) {
    const n = byId.get(id);
    total += ms;
    const l = label(n, repoRoot);
    if (l.fn === "(idle)") idle += ms;
    self.set(l.key, (self.get(l.key) ?? 0) + ms);
    let cur = n;
    let charged = l.fn === "(idle)" ? "(idle)" : l.fn === "(garbage collector)" ? "(gc)" : l.fn === "(program)" ? "(program)" : undefined;
    let chargedFn = charged;
    while (!charged && cur) {
      const cl = label(cur, repoRoot);
      if (cl.file.startsWith("dist/")) {
        charged = cl.file;
        chargedFn = cl.key;
      }
      cur = byId.get(parent.get(cur.id));
    }
    charged ??= "(node/deps outside dist)";
    chargedFn ??= charged;
    ownFile.set(charged, (ownFile.get(charged) ?? 0) + ms);
    ownFn.set(chargedFn, (ownFn.get(chargedFn) ?? 0) + ms);
  }
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, ms]) => ({ where: k, ms: Math.round(ms) }));
  return { profile: path, totalMs: Math.round(total), idleMs: Math.round(idle), topSelf: sorted(self), byFile: sorted(ownFile), byFunction: sorted(ownFn) };
}

/** Summaries of every .cpuprofile in `dir` (one per process: a build is one process). */
export async function summariseDir(dir, repoRoot, top) {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".cpuprofile"));
  return Promise.all(files.map((f) => summariseProfile(join(dir, f), repoRoot, top)));
}
