/**
 * `ocibuild [build] [flags] CONTEXT`: docker build and kaniko spellings.
 */
import { writeFile, rename } from "node:fs/promises";
import { resolve } from "node:path";
import { build, type BuildOptions, type BuildOutput } from "../../builder/build.js";
import { OcibuildError } from "../../errors.js";
import { parseLayoutRef } from "../../oci/layout.js";
import { type FlagSpec, bool, helpText, list, parseFlags, str } from "../flags.js";
import type { Command } from "../io.js";
import { createRenderer, summary, type ProgressMode } from "../progress.js";
import { REGISTRY_FLAGS, registryOptionsFrom } from "./copy.js";

const SPECS: FlagSpec[] = [
  { names: ["tag", "destination"], short: ["t", "d"], type: "string", repeatable: true, valueName: "REF", description: "Name and tag the image (and push it there unless --no-push)" },
  { names: ["file", "dockerfile"], short: ["f"], type: "string", valueName: "PATH", description: "Dockerfile path (default CONTEXT/Dockerfile; - reads stdin)" },
  { names: ["context"], type: "string", valueName: "DIR", description: "Build context (kaniko's dir://DIR or a path); or the positional CONTEXT" },
  { names: ["build-arg"], type: "string", repeatable: true, valueName: "KEY[=VALUE]", description: "Set a build argument (no value: taken from the environment)" },
  { names: ["target"], type: "string", valueName: "STAGE", description: "Build this stage" },
  { names: ["platform", "custom-platform"], type: "string", valueName: "OS/ARCH[/VARIANT]", description: "Target platform (default: the host's)" },
  { names: ["label"], type: "string", repeatable: true, valueName: "KEY=VALUE", description: "Add a label to the image" },
  { names: ["no-push"], type: "boolean", description: "Build (and write --output) without pushing" },
  { names: ["output"], short: ["o"], type: "string", repeatable: true, valueName: "OUT", description: "oci:DIR[:tag], type=oci,dest=DIR, type=registry" },
  { names: ["oci-layout-path"], type: "string", valueName: "DIR", description: "kaniko: also write an OCI layout to DIR" },
  { names: ["cache-dir"], type: "string", valueName: "DIR", description: "Cache directory (default $XDG_CACHE_HOME/ocibuild or ~/.cache/ocibuild)" },
  { names: ["digest-file"], type: "string", valueName: "FILE", description: "Write the image digest to FILE" },
  { names: ["iidfile"], type: "string", valueName: "FILE", description: "Write the image (manifest) digest to FILE" },
  { names: ["metadata-file"], type: "string", valueName: "FILE", description: "Write build metadata (digest, descriptor, steps) as JSON" },
  { names: ["progress"], type: "string", valueName: "MODE", description: "auto, plain or json (default auto = plain)" },
  { names: ["quiet"], short: ["q"], type: "boolean", description: "Print only the digest" },
  { names: ["reproducible"], type: "boolean", description: "Clamp timestamps to 0 unless SOURCE_DATE_EPOCH is set" },
  { names: ["compression-level"], type: "string", valueName: "0-9", description: "gzip level for new layers (default 6)" },
  { names: ["help"], short: ["h"], type: "boolean", description: "Show this help" },
  ...REGISTRY_FLAGS.filter((f) => f.names[0] !== "help"),
];

const USAGE = "Usage: ocibuild [build] [flags] CONTEXT";
const EXAMPLES = [
  "ocibuild -t registry.example.com/team/app:v1 .",
  "ocibuild -f docker/Dockerfile --build-arg VERSION=1.2 -t 127.0.0.1:5000/app:dev .",
  "ocibuild --no-push --output oci:./out:dev .",
];

function parseOutput(v: string): BuildOutput {
  if (v.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(v);
    return ref === undefined ? { type: "oci", dest: dir } : { type: "oci", dest: dir, tag: ref };
  }
  if (v.includes("=")) {
    const kv = Object.fromEntries(v.split(",").map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
    if (kv.type === "registry") return { type: "registry" };
    if (kv.type === "oci" && kv.dest) {
      if (kv.tar !== undefined && kv.tar !== "false") {
        throw new OcibuildError("USAGE_BAD_VALUE", `--output ${v}: OCI tar archives are not supported yet; use tar=false for a layout directory`);
      }
      return { type: "oci", dest: kv.dest };
    }
  }
  throw new OcibuildError("USAGE_BAD_VALUE", `unsupported --output "${v}"`, { hint: "use oci:DIR[:tag], type=oci,dest=DIR,tar=false or type=registry" });
}

function parseKeyValues(values: string[], flag: string, env?: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const i = v.indexOf("=");
    if (i < 0) {
      if (env === undefined) throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} "${v}" must be KEY=VALUE`);
      const fromEnv = env[v];
      if (fromEnv !== undefined) out[v] = fromEnv;
      continue;
    }
    if (i === 0) throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} "${v}" has an empty key`);
    out[v.slice(0, i)] = v.slice(i + 1);
  }
  return out;
}

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString("utf8");
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

export const buildCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, SPECS);
  if (bool(p, "help")) {
    io.stdout.write(helpText(USAGE, SPECS, EXAMPLES));
    return 0;
  }
  let contextArg = str(p, "context");
  if (contextArg?.startsWith("dir://")) contextArg = contextArg.slice("dir://".length);
  if (contextArg !== undefined && /^[a-z0-9]+:\/\//.test(contextArg)) {
    throw new OcibuildError("USAGE_BAD_VALUE", `--context ${contextArg}: only local directories (a path or dir://PATH) are supported`);
  }
  if (p.positionals.length > 1) throw new OcibuildError("USAGE", `expected one CONTEXT, got ${p.positionals.length}: ${p.positionals.join(" ")}`);
  const context = p.positionals[0] ?? contextArg;
  if (context === undefined) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "missing build CONTEXT (a directory, e.g. '.')", { hint: USAGE });
  const cwd = io.cwd;
  const file = str(p, "file");
  const progress = (str(p, "progress") ?? "auto") as string;
  if (!["auto", "plain", "json", "tty"].includes(progress)) throw new OcibuildError("USAGE_BAD_VALUE", `--progress must be auto, plain or json, not "${progress}"`);
  const quiet = bool(p, "quiet");
  const mode: ProgressMode = quiet ? "quiet" : progress === "json" ? "json" : "plain";
  const outputs = list(p, "output").map(parseOutput);
  const layoutPath = str(p, "oci-layout-path");
  if (layoutPath) outputs.push({ type: "oci", dest: layoutPath });
  const level = str(p, "compression-level");
  if (level !== undefined && !/^[0-9]$/.test(level)) throw new OcibuildError("USAGE_BAD_VALUE", `--compression-level must be 0-9, not "${level}"`);
  let sourceDateEpoch: number | undefined;
  const sde = io.env.SOURCE_DATE_EPOCH;
  if (sde !== undefined && sde !== "") {
    if (!/^\d+$/.test(sde)) throw new OcibuildError("USAGE_BAD_VALUE", `SOURCE_DATE_EPOCH must be whole seconds, not "${sde}"`);
    sourceDateEpoch = Number(sde);
  } else if (bool(p, "reproducible")) sourceDateEpoch = 0;
  const buildArgs = parseKeyValues(list(p, "build-arg"), "build-arg", io.env);
  const tags = list(p, "tag");
  const noPush = bool(p, "no-push");
  const wantsRegistry = outputs.some((o) => o.type === "registry");
  if (wantsRegistry && tags.length === 0) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "--output type=registry needs at least one -t/--tag");
  const opts: BuildOptions = {
    context: resolve(cwd, context),
    dockerfile: file !== undefined && file !== "-" ? resolve(cwd, file) : undefined,
    dockerfileText: file === "-" ? await readStdin(io.stdin) : undefined,
    tags,
    buildArgs,
    target: str(p, "target"),
    platform: str(p, "platform"),
    labels: parseKeyValues(list(p, "label"), "label"),
    push: !noPush && tags.length > 0,
    outputs: outputs.filter((o) => o.type !== "registry"),
    registry: registryOptionsFrom(p, io),
    cacheDir: str(p, "cache-dir") !== undefined ? resolve(cwd, str(p, "cache-dir")!) : undefined,
    sourceDateEpoch,
    compressionLevel: level !== undefined ? Number(level) : undefined,
    env: io.env,
    signal,
    onEvent: createRenderer(mode, mode === "json" ? io.stdout : io.stderr),
  };
  const result = await build(opts);
  if (mode === "quiet") io.stdout.write(`${result.digest}\n`);
  else if (mode === "plain") io.stdout.write(summary(result));
  const digestFile = str(p, "digest-file");
  if (digestFile) await writeAtomic(resolve(cwd, digestFile), result.digest);
  const iid = str(p, "iidfile");
  if (iid) await writeAtomic(resolve(cwd, iid), result.digest);
  const meta = str(p, "metadata-file");
  if (meta) {
    const data = {
      "containerimage.digest": result.digest,
      "containerimage.descriptor": result.descriptor,
      "image.name": tags.join(","),
      "ocibuild.steps": result.steps.map((s) => ({ ...s, reason: s.cached ? undefined : (s.reason ?? "no previous entry") })),
      "ocibuild.cache": { hits: result.steps.filter((s) => s.cached).length, misses: result.steps.filter((s) => !s.cached).length, secondsSaved: 0 },
    };
    await writeAtomic(resolve(cwd, meta), `${JSON.stringify(data, null, 2)}\n`);
  }
  return 0;
};
