/**
 * The supply-chain flags of `ocibuild build`: buildx's `--annotation`,
 * `--provenance`, `--sbom` and `--attest`, and `--sign-key` (cosign's key-based
 * signatures), mapped onto the library's `annotations`, `attest` and `sign` options.
 */
import { resolve } from "node:path";
import { OcibuildError } from "../../errors.js";
import type { BuildOptions } from "../../api.js";
import { parseAnnotation } from "../../oci/annotations.js";
import type { AttestOptions } from "../../builder/attest.js";
import { type FlagSpec, type ParsedFlags, list, str } from "../flags.js";

export const ATTEST_FLAGS: FlagSpec[] = [
  { names: ["annotation"], type: "string", repeatable: true, valueName: "[TYPE[,TYPE][PLATFORM]:]KEY=VALUE", description: "buildx: an OCI annotation; TYPE manifest (default), manifest-descriptor, index or index-descriptor" },
  { names: ["provenance"], type: "string", valueName: "true|false|mode=min|max[,version=v1|v0.2]", description: "buildx: attach SLSA provenance (off unless asked; true is mode=min)" },
  { names: ["sbom"], type: "string", valueName: "true|false", description: "buildx: attach an SPDX SBOM of the image's filesystem, made natively" },
  { names: ["attest"], type: "string", repeatable: true, valueName: "type=provenance|sbom[,...]", description: "buildx: --attest type=provenance,mode=max or --attest type=sbom (disabled=true turns one off)" },
  { names: ["sign-key"], type: "string", valueName: "PATH", description: "sign every pushed manifest with this key, in cosign's format (PKCS#8, SEC1 or cosign's encrypted key)" },
  { names: ["sign-key-password-file"], type: "string", valueName: "FILE", description: "the password of an encrypted --sign-key (else COSIGN_PASSWORD)" },
];

function bad(flag: string, value: string, why: string): OcibuildError {
  return new OcibuildError("USAGE_BAD_VALUE", `--${flag} ${value}: ${why}`);
}

/** A csv of key=value attributes, as buildx writes them (a bare word is `key=true`, or the type for --attest). */
function attributes(value: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of value.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    out.set(eq < 0 ? part : part.slice(0, eq), eq < 0 ? "true" : part.slice(eq + 1));
  }
  return out;
}

const TRUE: ReadonlySet<string> = new Set(["true", "1"]);
const FALSE: ReadonlySet<string> = new Set(["false", "0"]);

function provenanceFrom(value: string, flag: string): AttestOptions["provenance"] | null {
  if (FALSE.has(value)) return null;
  if (TRUE.has(value)) return { mode: "min" };
  const a = attributes(value);
  if (a.get("disabled") === "true") return null;
  const mode = a.get("mode") ?? "min";
  const version = a.get("version") ?? "v1";
  if (mode !== "min" && mode !== "max") throw bad(flag, value, `mode is min or max, not ${mode}`);
  if (version !== "v1" && version !== "v0.2") throw bad(flag, value, `version is v1 or v0.2, not ${version}`);
  const unknown = [...a.keys()].find((k) => !["type", "mode", "version", "disabled", "builder-id", "reproducible"].includes(k));
  if (unknown !== undefined) throw bad(flag, value, `unknown attribute ${unknown}`);
  return { mode, version };
}

function sbomFrom(value: string, flag: string): AttestOptions["sbom"] | null {
  if (FALSE.has(value)) return null;
  if (TRUE.has(value)) return {};
  const a = attributes(value);
  if (a.get("disabled") === "true") return null;
  if (a.has("generator")) throw bad(flag, value, "ocibuild makes the SBOM itself: a generator image is not used (leave generator out)");
  return {};
}

/** --attest values: each `type=provenance|sbom,...`. */
function fromAttest(values: string[], out: AttestOptions): void {
  for (const v of values) {
    const type = attributes(v).get("type");
    if (type === "provenance") applyOne(out, "provenance", provenanceFrom(v, "attest"));
    else if (type === "sbom") applyOne(out, "sbom", sbomFrom(v, "attest"));
    else throw bad("attest", v, `type is provenance or sbom, not ${type ?? "missing"}`);
  }
}

function applyOne<K extends keyof AttestOptions>(out: AttestOptions, key: K, v: AttestOptions[K] | null): void {
  if (v === null) delete out[key];
  else out[key] = v;
}

/** The library options from the supply-chain flags. */
export function attestOptionsFrom(p: ParsedFlags, cwd: string): Pick<BuildOptions, "annotations" | "attest" | "sign"> {
  const out: Pick<BuildOptions, "annotations" | "attest" | "sign"> = {};
  const annotations = list(p, "annotation").map(parseAnnotation);
  if (annotations.length) out.annotations = annotations;
  const attest: AttestOptions = {};
  const prov = str(p, "provenance");
  if (prov !== undefined) applyOne(attest, "provenance", provenanceFrom(prov, "provenance"));
  const sbom = str(p, "sbom");
  if (sbom !== undefined) applyOne(attest, "sbom", sbomFrom(sbom, "sbom"));
  fromAttest(list(p, "attest"), attest);
  if (attest.provenance || attest.sbom) out.attest = attest;
  const key = str(p, "sign-key");
  const pwFile = str(p, "sign-key-password-file");
  if (pwFile !== undefined && key === undefined) throw new OcibuildError("USAGE_MISSING_VALUE", "--sign-key-password-file needs --sign-key");
  if (key !== undefined) out.sign = { key: resolve(cwd, key), ...(pwFile !== undefined ? { passwordFile: resolve(cwd, pwFile) } : {}) };
  return out;
}
