#!/usr/bin/env node
// Bundles the CLI into one CommonJS file, dist/ocibuild.cjs, from tsc's output in dist/.
// Why: a CLI starts from nothing on every build. Loading ~150 ES modules (ours and our
// dependencies') one file at a time cost ~150-250 ms of every run; one file, compiled from
// a V8 code cache that bin/ocibuild keeps beside it, costs a fraction of that. The
// library (dist/index.js) stays tsc's ES modules; only the command line uses the bundle.
// gRPC is left out (required from node_modules when --executor buildkit loads it), and so
// is koffi (a native module: required from node_modules at the first xattr, mknod or mount),
// and so is @toondepauw/node-zstd (native: required at the first zstd layer written). fzstd
// (pure JS) is bundled; its module body runs only when a zstd layer is read on a Node
// without zstd of its own.
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
await build({
  stdin: { contents: 'export { main } from "./dist/cli/main.js";\n', resolveDir: root, sourcefile: "ocibuild-cli.js", loader: "js" },
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  outfile: join(root, "dist/ocibuild.cjs"),
  external: ["@grpc/grpc-js", "koffi", "@toondepauw/node-zstd"],
  // A dynamic import() of a builtin (`await import("node:tls")`, loaded only when needed)
  // becomes a deferred require(): bin/ocibuild.cjs runs the bundle in a vm.Script, which
  // has no ES module loader to import() with ("A dynamic import callback was not specified").
  supported: { "dynamic-import": false },
  // import.meta.url is the bundle's own URL (a CommonJS file has no import.meta; libc.ts asks for it only outside the bundle).
  banner: { js: 'var __ocibuildImportMeta = { get url() { return require("node:url").pathToFileURL(__filename).href; } };' },
  define: { "import.meta": "__ocibuildImportMeta" },
  logLevel: "warning",
});

// The bundle must be ASCII: one other character (esbuild escapes those in strings, not in
// regular expressions) makes V8 hold all of it as a two-byte string, decoded from UTF-8
// and scanned as UTF-16 on every run (~2x the memory, and a fully cached rebuild's start
// the slower). Write such a character as an escape (\u00b5).
const out = readFileSync(join(root, "dist/ocibuild.cjs"));
const at = out.findIndex((b) => b > 0x7f);
if (at >= 0) {
  const line = out.subarray(0, at).toString("latin1").split("\n").length;
  process.stderr.write(`bundle: dist/ocibuild.cjs line ${line} has a non-ASCII character; write it as an escape in its source\n`);
  process.exit(1);
}
