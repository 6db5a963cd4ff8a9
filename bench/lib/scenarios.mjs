// The four scenarios of issue 9. Each has a generated build context (deterministic,
// from a seeded PRNG, kept under .cache/bench/contexts and made only once), a
// Dockerfile taking the base as `ARG BASE`, and the phases it is timed in.
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { prng, randomBuffer, textBuffer } from "./util.mjs";

/** Sizes per mode. Full is what the issue asks; quick keeps the same shapes, smaller. */
export const SIZES = {
  full: { depsPackages: 40, depsPerPackage: 75, appFiles: 200, ctxFiles: 20000, ctxDirs: 200, binFiles: 10, binBytes: 10 << 20 },
  quick: { depsPackages: 20, depsPerPackage: 50, appFiles: 50, ctxFiles: 3000, ctxDirs: 30, binFiles: 4, binBytes: 4 << 20 },
};

const S1 = `ARG BASE
FROM \${BASE}
RUN echo hello > /hello.txt
`;

// A Python-style service: a dependency layer (a few thousand files written by a RUN, as
// pip install would), the app sources, and a "compile" RUN over them.
const s2 = (z) => `ARG BASE
FROM \${BASE}
WORKDIR /app
COPY requirements.txt ./
RUN mkdir -p /opt/venv/lib && while read -r pkg version; do \\
      mkdir -p /opt/venv/lib/$pkg; i=0; \\
      while [ $i -lt ${z.depsPerPackage} ]; do printf '# %s %s\\nVALUE_%d = %d\\n' "$pkg" "$version" $i $i > /opt/venv/lib/$pkg/mod_$i.py; i=$((i+1)); done; \\
    done < requirements.txt
COPY src/ ./src/
RUN mkdir -p build && sha256sum src/app/*.py > build/manifest.txt && tar -czf build/app.tgz src
CMD ["cat", "/app/build/manifest.txt"]
`;

// Two independent build stages (each waits a second, as a download would, then writes
// files), one stage nothing uses (slow: building it would show), and a final stage.
const S3 = `ARG BASE
FROM \${BASE} AS deps-a
RUN mkdir /out && sleep 1 && i=0 && while [ $i -lt 500 ]; do echo "a $i" > /out/a$i.txt; i=$((i+1)); done
FROM \${BASE} AS deps-b
RUN mkdir /out && sleep 1 && dd if=/dev/urandom of=/out/b.bin bs=1M count=8 2>/dev/null
FROM \${BASE} AS unused
RUN sleep 3 && mkdir /out && echo never > /out/unused.txt
FROM \${BASE}
COPY --from=deps-a /out /opt/a
COPY --from=deps-b /out /opt/b
CMD ["ls", "/opt"]
`;

const S4 = `ARG BASE
FROM \${BASE}
COPY . /ctx
CMD ["ls", "/ctx"]
`;

export async function makeOnce(dir, fill) {
  if (existsSync(join(dir, "Dockerfile"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

async function fillService(dir, z) {
  const rand = prng(2);
  const pkgs = [];
  for (let i = 0; i < z.depsPackages; i++) pkgs.push(`pkg${String(i).padStart(3, "0")} 1.${i}.0`);
  await writeFile(join(dir, "requirements.txt"), pkgs.join("\n") + "\n");
  await mkdir(join(dir, "src/app"), { recursive: true });
  for (let i = 0; i < z.appFiles; i++) {
    const name = i === 0 ? "main.py" : `module_${String(i).padStart(4, "0")}.py`;
    await writeFile(join(dir, "src/app", name), textBuffer(rand, 1500 + ((rand() * 3000) | 0)));
  }
  await writeFile(join(dir, "Dockerfile"), s2(z));
}

async function fillLargeContext(dir, z) {
  const rand = prng(4);
  for (let d = 0; d < z.ctxDirs; d++) await mkdir(join(dir, "src", `d${String(d).padStart(3, "0")}`), { recursive: true });
  for (let i = 0; i < z.ctxFiles; i++) {
    const d = `d${String(i % z.ctxDirs).padStart(3, "0")}`;
    await writeFile(join(dir, "src", d, `f${String(i).padStart(5, "0")}.txt`), textBuffer(rand, 200 + ((rand() * 1800) | 0)));
  }
  // Binaries: 64 KiB blocks, alternately incompressible and text-like (about 2:1 with gzip, like real executables).
  await mkdir(join(dir, "bin"), { recursive: true });
  for (let i = 0; i < z.binFiles; i++) {
    const blocks = [];
    for (let off = 0, k = 0; off < z.binBytes; off += 65536, k++) {
      const n = Math.min(65536, z.binBytes - off);
      blocks.push(k % 2 ? textBuffer(rand, n) : randomBuffer(rand, n));
    }
    await writeFile(join(dir, "bin", `tool${i}.bin`), Buffer.concat(blocks));
  }
  await writeFile(join(dir, "Dockerfile"), S4);
}

/**
 * The scenarios, each { id, title, base: "debian"|"busybox", dir, phases, change? }.
 * `change()` rewrites one source file (for the one-file-changed rebuild).
 */
export async function prepareScenarios(cacheDir, mode) {
  const z = SIZES[mode];
  const root = join(cacheDir, "contexts");
  await mkdir(root, { recursive: true });
  const tiny = await makeOnce(join(root, "s1-tiny-run"), (d) => writeFile(join(d, "Dockerfile"), S1));
  const svc = await makeOnce(join(root, `s2-service-${mode}`), (d) => fillService(d, z));
  const multi = await makeOnce(join(root, "s3-multistage"), (d) => writeFile(join(d, "Dockerfile"), S3));
  const large = await makeOnce(join(root, `s4-large-context-${mode}`), (d) => fillLargeContext(d, z));
  let edits = 0;
  return [
    { id: "s1", title: "tiny RUN on the Debian base", base: "debian", dir: tiny, phases: ["cold"] },
    {
      id: "s2",
      title: `service: ${z.depsPackages * z.depsPerPackage} dep files, ${z.appFiles} sources`,
      base: "debian",
      dir: svc,
      phases: ["cold", "warm", "change"],
      change: async () => {
        edits++;
        await writeFile(join(svc, "src/app/main.py"), `# edit ${Date.now()}-${edits}\n` + textBuffer(prng(2), 1500).toString());
      },
    },
    { id: "s3", title: "multi-stage: 2 parallel stages, 1 unused", base: "busybox", dir: multi, phases: ["cold"] },
    {
      id: "s4",
      title: `large context: ${z.ctxFiles} files + ${(z.binFiles * z.binBytes) >> 20} MiB binaries`,
      base: "busybox",
      dir: large,
      phases: ["cold", "warm"],
    },
  ];
}

/**
 * Targets (ratio ocibuild/peer, at most), per scenario phase. Issue 22: every scenario at
 * or under 1.0x BuildKit's warm daemon and at or under 0.5x buildah; s4 warm keeps issue
 * 9's stricter 0.3x against buildah.
 */
export const TARGETS = {
  "s1/cold": { buildah: 0.5, buildkit: 1.0 },
  "s2/cold": { buildah: 0.5, buildkit: 1.0 },
  "s2/warm": { buildah: 0.5, buildkit: 1.0 },
  "s2/change": { buildah: 0.5, buildkit: 1.0 },
  "s3/cold": { buildah: 0.5, buildkit: 1.0 },
  "s4/cold": { buildah: 0.5, buildkit: 1.0 },
  "s4/warm": { buildah: 0.3, buildkit: 1.0 },
};
