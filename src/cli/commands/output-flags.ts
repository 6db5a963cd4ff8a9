/**
 * `--output`/`-o` values: the docker/skopeo transport forms (oci:DIR[:TAG],
 * oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]) and buildx's csv form
 * (type=...,dest=...,name=...), read as buildx reads it: one csv record whose
 * fields may be quoted ("name=a,b"), keys case-insensitive. Every attribute a
 * type does not implement is refused by name, never ignored.
 */
import { resolve } from "node:path";
import { OcibuildError } from "../../errors.js";
import type { BuildOptions } from "../../builder/build.js";
import type { BuildOutput } from "../../builder/output.js";
import { LAYER_COMPRESSIONS, levelRange, validLevel, type LayerCompression } from "../../oci/layer-compression.js";
import { parseLayoutRef } from "../../oci/layout.js";
import { parseReference } from "../../oci/reference.js";

function bad(v: string, message: string, hint?: string): OcibuildError {
  return new OcibuildError("USAGE_BAD_VALUE", `--output ${v}: ${message}`, { hint, details: { flag: "--output" } });
}

/** One csv record's fields (RFC 4180: a field may be quoted, "" is a quote inside one), as buildx's csvvalue reads it. */
export function csvFields(v: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (v[i] === '"') {
      for (i++; ; i++) {
        if (i >= v.length) throw bad(v, "a quote is not closed");
        if (v[i] !== '"') field += v[i];
        else if (v[i + 1] === '"') field += v[++i];
        else break;
      }
      i++;
      if (i < v.length && v[i] !== ",") throw bad(v, `text after a closing quote: "${v.slice(i)}"`);
    } else {
      const end = v.indexOf(",", i);
      field = v.slice(i, end < 0 ? v.length : end);
      if (field.includes('"')) throw bad(v, `a quote inside the unquoted field "${field}"`, 'quote the whole field: "name=a,b"');
      i = end < 0 ? v.length : end;
    }
    fields.push(field);
    if (i >= v.length) return fields;
    i++; // the comma
  }
}

function splitArchive(v: string, prefix: string): { path: string; ref?: string } {
  const rest = v.slice(prefix.length);
  const colon = rest.indexOf(":");
  const path = colon < 0 ? rest : rest.slice(0, colon);
  const ref = colon < 0 ? undefined : rest.slice(colon + 1);
  if (path === "") throw bad(v, "missing the file name");
  return ref === undefined || ref === "" ? { path } : { path, ref };
}

/** buildx's layer attributes, which every type here takes (outputLayerOptions reads them). */
const LAYER_KEYS = ["compression", "compression-level", "force-compression"];

/** The attributes each buildx output type takes here; anything else is refused by name. */
const KEYS: Record<string, string[]> = {
  registry: ["type", "name", "push", ...LAYER_KEYS],
  image: ["type", "name", "push", ...LAYER_KEYS],
  oci: ["type", "dest", "tar", "name", ...LAYER_KEYS],
  docker: ["type", "dest", "tar", "name", ...LAYER_KEYS],
};

/** name=a,b as BuildKit splits it (on commas); each must be a reference. */
function names(v: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const out = value.split(",").map((n) => n.trim());
  for (const n of out) {
    if (n === "") throw bad(v, `name=${value} has an empty name`);
    try {
      parseReference(n);
    } catch (e) {
      throw bad(v, `name=${n}: ${(e as Error).message}`);
    }
  }
  return out;
}

function keyValues(v: string): Record<string, string> {
  const kv: Record<string, string> = {};
  for (const field of csvFields(v)) {
    const eq = field.indexOf("=");
    if (eq <= 0) throw bad(v, `"${field}" is not KEY=VALUE`);
    kv[field.slice(0, eq).trim().toLowerCase()] = field.slice(eq + 1);
  }
  return kv;
}

function csvOutput(v: string, cwd: string): BuildOutput {
  const kv = keyValues(v);
  const type = kv.type;
  const allowed = type === undefined ? undefined : KEYS[type];
  if (!allowed) {
    throw bad(v, `type=${type ?? "(none)"} is not supported`, "supported: type=registry[,name=REF], type=image,push=true[,name=REF], type=oci,dest=FILE[,tar=false], type=docker,dest=FILE");
  }
  for (const k of Object.keys(kv)) {
    if (!allowed.includes(k)) throw bad(v, `"${k}" is not implemented for type=${type}`, `type=${type} takes ${allowed.filter((a) => a !== "type").join(", ")}`);
  }
  const named = names(v, kv.name);
  if (type === "registry" || type === "image") {
    if (type === "image" && kv.push !== "true") throw bad(v, "type=image without push=true would store the image in a daemon, and there is none", "add push=true, or write a file: type=docker,dest=FILE");
    if (kv.push !== undefined && kv.push !== "true") throw bad(v, `push=${kv.push} contradicts type=registry`);
    return named ? { type: "registry", names: named } : { type: "registry" };
  }
  if (!kv.dest) throw bad(v, `type=${type} needs dest=PATH (there is no daemon to load into)`);
  if (kv.tar !== undefined && kv.tar !== "true" && kv.tar !== "false") throw bad(v, `tar=${kv.tar}: use true or false`);
  const dest = resolve(cwd, kv.dest);
  if (type === "docker") {
    if (kv.tar === "false") throw bad(v, "type=docker is always a tar");
    return named ? { type: "docker-archive", dest, tags: named } : { type: "docker-archive", dest };
  }
  if (named && named.length > 1) throw bad(v, `an OCI layout or archive takes one name, not ${named.length}`);
  const tag = named ? (parseReference(named[0]!).tag ?? "latest") : undefined;
  const kind = kv.tar === "false" ? "oci" : "oci-archive";
  return tag ? { type: kind, dest, tag } : { type: kind, dest };
}

/** Parses one `--output` value (docker/skopeo transport form or buildx csv form). */
export function parseOutput(v: string, cwd: string): BuildOutput {
  if (v.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(v);
    if (dir === "") throw bad(v, "missing the directory");
    return ref === undefined ? { type: "oci", dest: resolve(cwd, dir) } : { type: "oci", dest: resolve(cwd, dir), tag: ref };
  }
  if (v.startsWith("oci-archive:")) {
    const { path, ref } = splitArchive(v, "oci-archive:");
    return ref === undefined ? { type: "oci-archive", dest: resolve(cwd, path) } : { type: "oci-archive", dest: resolve(cwd, path), tag: ref };
  }
  if (v.startsWith("docker-archive:")) {
    const { path, ref } = splitArchive(v, "docker-archive:");
    return ref === undefined ? { type: "docker-archive", dest: resolve(cwd, path) } : { type: "docker-archive", dest: resolve(cwd, path), tags: [ref] };
  }
  if (v.includes("=")) return csvOutput(v, cwd);
  throw bad(v, "not a supported output", "use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], type=oci|docker,dest=PATH or type=registry[,name=REF]");
}

type LayerOptions = Pick<BuildOptions, "compression" | "compressionLevel" | "forceCompression">;

/** One source of layer settings: a flag pair or an --output value, and how to name it in messages. */
interface LayerSource {
  name: string;
  compression?: string;
  level?: string;
  force?: string;
}

function usage(message: string, flag: string, hint?: string): OcibuildError {
  return new OcibuildError("USAGE_BAD_VALUE", message, { hint, details: { flag } });
}

/** The one value several sources agree on, or a usage error naming two that differ. */
function agreed(sources: LayerSource[], key: "compression" | "level", what: string, flag: string): string | undefined {
  const set = sources.filter((s) => s[key] !== undefined);
  const other = set.find((s) => s[key]!.toLowerCase() !== set[0]![key]!.toLowerCase());
  if (other) {
    throw usage(`${set[0]!.name} and ${other.name} ask for different ${what}s (${set[0]![key]} and ${other[key]}); a build writes its layers once, for every output`, flag);
  }
  return set[0]?.[key]?.toLowerCase();
}

/**
 * The build's layer compression from --compression/--compression-level (kaniko's)
 * and the compression=, compression-level=, force-compression= attributes of
 * buildx-style --output values. Layers are written once per build, so every source
 * that names a value must name the same one.
 */
export function layerOptions(flags: { compression?: string; level?: string }, outputs: readonly string[]): LayerOptions {
  const sources: LayerSource[] = [{ name: "--compression/--compression-level", compression: flags.compression, level: flags.level }];
  for (const v of outputs) {
    if (!v.includes("=") || /^(oci|oci-archive|docker-archive):/.test(v)) continue;
    const kv = keyValues(v);
    sources.push({ name: `--output ${v}`, compression: kv.compression, level: kv["compression-level"], force: kv["force-compression"] });
  }
  const compression = agreed(sources, "compression", "compression", "--compression");
  if (compression === "estargz") throw usage("compression=estargz is not supported: ocibuild writes gzip, zstd or uncompressed layers", "--compression");
  if (compression !== undefined && !LAYER_COMPRESSIONS.includes(compression as LayerCompression)) {
    throw usage(`compression takes ${LAYER_COMPRESSIONS.join(", ")}, not "${compression}"`, "--compression");
  }
  const c = (compression ?? "gzip") as LayerCompression;
  const level = agreed(sources, "level", "compression level", "--compression-level");
  if (level !== undefined && (!/^\d+$/.test(level) || !validLevel(c, Number(level)))) {
    throw usage(`the ${c} compression level must be ${levelRange(c)}, not "${level}"`, "--compression-level");
  }
  let force = false;
  for (const s of sources) {
    if (s.force === undefined) continue;
    if (s.force !== "true" && s.force !== "false") throw usage(`${s.name}: force-compression=${s.force}: use true or false`, "--output");
    force ||= s.force === "true";
  }
  const out: LayerOptions = {};
  if (compression !== undefined) out.compression = c;
  if (level !== undefined) out.compressionLevel = Number(level);
  if (force) out.forceCompression = true;
  return out;
}
