/**
 * docker buildx's --secret and --ssh values, read into the build's secret and ssh
 * specs (the library takes the specs; the flags' text forms are the CLI's).
 */
import { OcibuildError } from "../../errors.js";
import type { SecretSpec, SshSpec } from "../../builder/secrets.js";

/** "id=NAME,src=FILE", "id=NAME,env=VAR", "type=file,id=...,source=..." (docker buildx's forms). */
export function parseSecretFlag(v: string): SecretSpec {
  const kv = new Map(v.split(",").map((p) => [p.slice(0, p.indexOf("=") < 0 ? p.length : p.indexOf("=")), p.includes("=") ? p.slice(p.indexOf("=") + 1) : ""] as const));
  const id = kv.get("id");
  if (!id) throw new OcibuildError("USAGE_BAD_VALUE", `--secret needs id=NAME (given fields: ${[...kv.keys()].join(", ") || "none"})`);
  const src = kv.get("src") ?? kv.get("source");
  const env = kv.get("env");
  const type = kv.get("type");
  if (type === "env" || (env !== undefined && src === undefined)) return { id, env: env ?? src ?? id };
  if (src !== undefined) return { id, src };
  return { id, env: id };
}

/** "default", "default=/path/sock", "id=key1,key2". */
export function parseSshFlag(v: string): SshSpec {
  const i = v.indexOf("=");
  if (i < 0) return { id: v, paths: [] };
  return { id: v.slice(0, i), paths: v.slice(i + 1).split(",").filter(Boolean) };
}
