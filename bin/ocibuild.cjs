#!/usr/bin/env node
// The command line. It runs the bundled CLI (dist/ocibuild.cjs, made by scripts/bundle.mjs)
// compiled from a V8 code cache kept beside it, because a CLI pays its start-up on every
// build: compiling ~0.55 MB of JavaScript from a cache instead of from source (and without
// resolving ~150 modules one file at a time) was most of a fully cached rebuild's time.
// The cache is per command (what a build compiles differs from what `inspect` compiles),
// written after a successful run when it was missing or V8 refused it (a new Node or
// bundle), and again after each of the next few and after the 8th, 16th, 32nd... (so it
// also holds what they compiled), atomically, and only where dist/ is writable; a
// missing bundle falls back to tsc's modules.
// CommonJS (.cjs): an ES module entry point starts Node's ES module loader and imports its
// builtins through it, ~13M instructions (~4 ms) of every run that the bundle, CommonJS
// itself, never needs. bin/ocibuild (the command) starts it; see there.
"use strict";
// bin/ocibuild started Node without NODE_EXTRA_CA_CERTS (Node would parse it at start-up):
// it goes back into the environment before anything reads it or starts a child process.
const movedCaCerts = process.env.OCIBUILD_NODE_EXTRA_CA_CERTS;
if (movedCaCerts !== undefined) {
  delete process.env.OCIBUILD_NODE_EXTRA_CA_CERTS;
  if (movedCaCerts !== "") process.env.NODE_EXTRA_CA_CERTS = movedCaCerts;
}
const { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } = require("node:fs");
const { createRequire } = require("node:module");
const { dirname, join } = require("node:path");
const { Script } = require("node:vm");

const dist = join(__dirname, "..", "dist");
/** Successful runs of a command whose code cache is written again (see loadBundle). */
const LEARNING_RUNS = 4;
const argv = process.argv.slice(2);

function loadBundle() {
  const file = join(dist, "ocibuild.cjs");
  let source;
  let st;
  try {
    st = statSync(file);
    // tsc rewrites every module: a bundle older than them is stale (made before the
    // last `tsc`), so the modules are what is current.
    if (statSync(join(dist, "cli", "main.js")).mtimeMs > st.mtimeMs) return undefined;
    // ASCII (scripts/bundle.mjs makes sure): read as Latin-1, without UTF-8's decoding (~0.5 ms).
    source = readFileSync(file, "latin1");
  } catch {
    return undefined;
  }
  const commands = ["build", "plan", "parse", "inspect", "run", "copy", "pull", "push", "setup", "buildkit", "unshare"];
  // `ocibuild [flags] CONTEXT` is a build; help and version compile next to nothing.
  const command = commands.includes(argv[0]) ? argv[0] : argv.length === 0 || /^(-h|--help|help|--version|version)$/.test(argv[0]) ? "other" : "build";
  // V8 refuses a cache made under other flags (e.g. --cpu-prof): those get their own file.
  const flags = process.execArgv.length ? `-${require("node:crypto").createHash("sha256").update(process.execArgv.join(" ")).digest("hex").slice(0, 8)}` : "";
  const cacheFile = join(dist, ".v8-cache", `${command}-${process.version}-${process.arch}-${st.size}-${Math.trunc(st.mtimeMs)}${flags}.bin`);
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    /* first run of this command with this bundle */
  }
  // The cache holds what the runs that wrote it compiled, and a cold build compiles little
  // of what a fully cached rebuild runs (that rebuild then compiled the rest itself: ~24 ms
  // of every one). So the first LEARNING_RUNS successful runs of a command write it again:
  // what they compiled plus all the cache they read held. So do the 8th, 16th, 32nd...
  // (~5 ms each): when the first runs were all cold builds, the rebuilds after them
  // compiled what they ran themselves (104.6 against 74.4 ms for s2 fully cached) until
  // one of those learned it. `.runs` counts the successful runs since the cache was made.
  const runsFile = `${cacheFile}.runs`;
  let counted = 0;
  if (cachedData) {
    try {
      counted = Number(readFileSync(runsFile, "utf8")) || 0;
    } catch {
      /* written before the count was kept */
    }
  }
  const wrapper = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new Script(wrapper, { filename: file, cachedData });
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(file), mod, file, dist);
  const saveCache = () => {
    const usable = cachedData && !script.cachedDataRejected;
    const run = usable ? counted + 1 : 1;
    const learn = run <= LEARNING_RUNS || Number.isInteger(Math.log2(run));
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    try {
      if (learn) {
        mkdirSync(dirname(cacheFile), { recursive: true });
        writeFileSync(tmp, script.createCachedData());
        renameSync(tmp, cacheFile);
      }
      writeFileSync(tmp, String(run));
      renameSync(tmp, runsFile);
      if (!learn) return;
      // Caches of earlier bundles are of no more use.
      const current = `-${st.size}-${Math.trunc(st.mtimeMs)}`;
      for (const f of readdirSync(dirname(cacheFile))) if ((f.endsWith(".bin") || f.endsWith(".runs")) && !f.includes(current)) unlinkSync(join(dirname(cacheFile), f));
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        /* nothing was written */
      }
    }
  };
  return { main: mod.exports.main, saveCache };
}

(async () => {
  const cli = loadBundle();
  const main = cli?.main ?? (await import("../dist/cli/main.js")).main;
  const code = await main(argv);
  process.exitCode = code;
  if (code === 0) cli?.saveCache();
})();
