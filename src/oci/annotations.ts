/**
 * OCI annotations a build writes, as buildx's `--annotation` and BuildKit's
 * exporter `annotation*` attributes spell them: a key and value, the levels they go
 * to (`manifest`, the default: each image manifest; `manifest-descriptor`: the
 * index's descriptor of each manifest; `index`: the index itself;
 * `index-descriptor`: an OCI layout's index.json entry for the index), and an
 * optional platform that limits the manifest levels to one platform's image.
 * A level the output does not have (an index for a single image, a layout for a
 * registry push) is skipped, as BuildKit does.
 */
import { OcibuildError } from "../errors.js";
import { parsePlatform, platformMatches, type Platform } from "./platform.js";

export type AnnotationLevel = "manifest" | "manifest-descriptor" | "index" | "index-descriptor";

const LEVELS: ReadonlySet<string> = new Set<AnnotationLevel>(["manifest", "manifest-descriptor", "index", "index-descriptor"]);

export interface Annotation {
  readonly levels: readonly AnnotationLevel[];
  readonly platform?: Platform;
  readonly key: string;
  readonly value: string;
}

/** The OCI keys buildx adds for the final stage's base image. */
export const BASE_NAME_ANNOTATION = "org.opencontainers.image.base.name";
export const BASE_DIGEST_ANNOTATION = "org.opencontainers.image.base.digest";

function bad(text: string, why: string): OcibuildError {
  return new OcibuildError("USAGE_BAD_VALUE", `annotation ${JSON.stringify(text)}: ${why}`, {
    hint: "KEY=VALUE, or TYPE[,TYPE][PLATFORM]:KEY=VALUE with TYPE manifest, manifest-descriptor, index or index-descriptor",
  });
}

/** `manifest[linux/amd64]` or `index,manifest`: the levels, and the platform if one is given. */
function parseLevels(prefix: string, text: string): { levels: AnnotationLevel[]; platform?: Platform } {
  const m = /^([a-z,-]+)(?:\[([^\]]+)\])?$/.exec(prefix);
  if (!m) throw bad(text, `"${prefix}" is not a list of annotation types`);
  const levels = m[1]!.split(",");
  const unknown = levels.find((l) => !LEVELS.has(l));
  if (unknown !== undefined) throw bad(text, `"${unknown}" is not an annotation type`);
  let platform: Platform | undefined;
  if (m[2] !== undefined) {
    try {
      platform = parsePlatform(m[2]);
    } catch (e) {
      throw bad(text, `"${m[2]}" is not a platform (${(e as Error).message})`);
    }
  }
  return { levels: levels as AnnotationLevel[], ...(platform ? { platform } : {}) };
}

/** One `--annotation` value: `KEY=VALUE` or `TYPES[PLATFORM]:KEY=VALUE`. */
export function parseAnnotation(text: string): Annotation {
  const eq = text.indexOf("=");
  if (eq <= 0) throw bad(text, "no KEY=VALUE");
  const left = text.slice(0, eq);
  const value = text.slice(eq + 1);
  const colon = left.indexOf(":");
  const prefix = colon < 0 ? undefined : left.slice(0, colon);
  const key = colon < 0 ? left : left.slice(colon + 1);
  if (key === "") throw bad(text, "the key is empty");
  const { levels, platform } = prefix === undefined ? { levels: ["manifest" as const], platform: undefined } : parseLevels(prefix, text);
  return { levels, key, value, ...(platform ? { platform } : {}) };
}

/**
 * An output attribute in BuildKit's spelling, `annotation.KEY`, `annotation-TYPE.KEY`,
 * `annotation[PLATFORM].KEY` or `annotation-TYPE[PLATFORM].KEY`; undefined for any other attribute.
 */
export function parseAnnotationAttribute(name: string, value: string): Annotation | undefined {
  const m = /^annotation(?:-([a-z-]+))?(?:\[([^\]]+)\])?\.(.+)$/.exec(name);
  if (!m) return undefined;
  const prefix = `${m[1] ?? "manifest"}${m[2] !== undefined ? `[${m[2]}]` : ""}`;
  return { ...parseLevels(prefix, `${name}=${value}`), key: m[3]!, value };
}

/** The annotations of `level`, for `platform`'s image where the level is per manifest; later ones win. */
export function annotationsAt(all: readonly Annotation[], level: AnnotationLevel, platform?: Platform): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const a of all) {
    if (!a.levels.includes(level)) continue;
    if (a.platform && (!platform || !platformMatches(a.platform, platform))) continue;
    out[a.key] = a.value;
  }
  return Object.keys(out).length ? out : undefined;
}
