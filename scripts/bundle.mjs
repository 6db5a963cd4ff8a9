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
  logLevel: "warning",
});
