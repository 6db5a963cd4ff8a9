#!/usr/bin/env node
// `npm run demo`: the main job, end to end, on this machine alone.
//  1. starts a local registry (Debian's docker-registry) on a free loopback port;
//  2. makes a busybox base image from Debian's busybox-static and pushes it there;
//  3. runs `ocibuild -t REGISTRY/demo/hello:v1 examples/hello-service` (RUN steps in
//     bubblewrap), which pushes the image and prints its digest and the step report;
//  4. checks the pushed digest with skopeo, and stops the registry.
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startRegistry } from "../dist/testing/registry.js";
import { pushBusyboxBase } from "../dist/testing/busybox.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cacheDir = join(root, ".cache", "demo");
mkdirSync(cacheDir, { recursive: true });
const say = (m) => console.log(`\x1b[1mdemo:\x1b[0m ${m}`);

const reg = await startRegistry();
const work = mkdtempSync(join(cacheDir, "base-"));
let code = 1;
try {
  say(`registry listening on ${reg.url} (data in ${reg.dir})`);
  const baseRef = `${reg.host}/base/busybox:latest`;
  const base = await pushBusyboxBase({ reference: baseRef, workDir: work, cacheDir });
  say(`pushed base image ${baseRef}@${base.digest}`);
  const ref = `${reg.host}/demo/hello:v1`;
  const args = [join(root, "bin/ocibuild"), "-t", ref, "--build-arg", `BASE=${baseRef}`, "--cache-dir", cacheDir, "--digest-file", join(work, "digest"), join(root, "examples/hello-service")];
  say(`ocibuild -t ${ref} --build-arg BASE=${baseRef} examples/hello-service`);
  code = await new Promise((resolve) => {
    const child = spawn(args[0], args.slice(1), { stdio: "inherit" });
    child.on("close", (c) => resolve(c ?? 1));
  });
  if (code === 0) {
    const digest = execFileSync("cat", [join(work, "digest")]).toString().trim();
    const seen = execFileSync("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${ref}`]).toString().trim();
    say(seen === digest ? `skopeo confirms ${ref} is ${digest}` : `MISMATCH: skopeo sees ${seen}, ocibuild printed ${digest}`);
    if (seen !== digest) code = 1;
  }
} catch (e) {
  console.error(e instanceof Error ? e.message : e);
  code = 1;
} finally {
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(code);
