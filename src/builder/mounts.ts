/**
 * RUN --mount: parsing with BuildKit's field names and defaults, and the typed
 * specs the RUN step prepares (cache dirs under the cache dir, binds from the
 * context or another stage, tmpfs, secrets, ssh agent sockets).
 */
import { OcibuildError, optionWords } from "../errors.js";

export type MountSpec =
  | { type: "bind"; target: string; source: string; from?: string; readonly: boolean }
  | { type: "cache"; target: string; id: string; sharing: "shared" | "private" | "locked"; from?: string; source: string; mode: number; uid: number; gid: number; readonly: boolean }
  | { type: "tmpfs"; target: string; size?: number }
  | { type: "secret"; id: string; target?: string; env?: string; required: boolean; mode: number; uid: number; gid: number }
  | { type: "ssh"; id: string; target: string; required: boolean; mode: number; uid: number; gid: number };

/** What to do about a secret that a RUN --mount requires and the build was not given (either executor). */
export function missingSecretHint(id: string): string {
  return `pass it with ${optionWords("secrets", `id=${id},src=FILE`)} or ${optionWords("secrets", `id=${id},env=VARIABLE`)}`;
}

function bad(spec: string, why: string): OcibuildError {
  return new OcibuildError("DOCKERFILE_INVALID_MOUNT", `invalid --mount=${spec}: ${why}`);
}

/** "64m", "1g", "1024" -> bytes (Docker's RAMInBytes). */
export function parseSize(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$/i.exec(v.trim());
  if (!m) return undefined;
  const mult: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };
  return Math.floor(Number(m[1]) * mult[m[2]!.toLowerCase()]!);
}

function bool(spec: string, key: string, v: string | undefined): boolean {
  if (v === undefined || v === "" || v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw bad(spec, `${key} takes true or false, not "${v}"`);
}

function num(spec: string, key: string, v: string, base = 10): number {
  const n = base === 8 ? parseInt(v, 8) : Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw bad(spec, `${key} must be a number, not "${v}"`);
  return n;
}

/** Parse one --mount value; `sshIndex` numbers ssh mounts for their default targets. */
export function parseMount(spec: string, sshIndex = 0): MountSpec {
  const kv = new Map<string, string | undefined>();
  for (const field of spec.split(",")) {
    if (field === "") continue;
    const i = field.indexOf("=");
    const key = (i < 0 ? field : field.slice(0, i)).trim().toLowerCase();
    kv.set(key, i < 0 ? undefined : field.slice(i + 1));
  }
  const get = (...names: string[]) => {
    for (const n of names) if (kv.has(n)) return kv.get(n) ?? "";
    return undefined;
  };
  const type = get("type") ?? "bind";
  const target = get("target", "dst", "destination");
  const known = new Set(["type", "target", "dst", "destination", "source", "src", "from", "ro", "readonly", "rw", "readwrite", "id", "sharing", "mode", "uid", "gid", "required", "size", "env"]);
  for (const k of kv.keys()) if (!known.has(k)) throw bad(spec, `unknown field "${k}"`);
  const ro = get("ro", "readonly");
  const rw = get("rw", "readwrite");
  const mode = get("mode");
  const uid = get("uid");
  const gid = get("gid");
  switch (type) {
    case "bind": {
      if (!target) throw bad(spec, "a bind mount needs a target");
      return { type, target, source: get("source", "src") ?? "/", from: get("from") || undefined, readonly: rw !== undefined ? !bool(spec, "rw", rw) : true };
    }
    case "cache": {
      if (!target) throw bad(spec, "a cache mount needs a target");
      const sharing = get("sharing") ?? "shared";
      if (sharing !== "shared" && sharing !== "private" && sharing !== "locked") throw bad(spec, `sharing must be shared, private or locked, not "${sharing}"`);
      return {
        type,
        target,
        id: get("id") || target,
        sharing,
        from: get("from") || undefined,
        source: get("source", "src") ?? "/",
        mode: mode !== undefined ? num(spec, "mode", mode, 8) : 0o755,
        uid: uid !== undefined ? num(spec, "uid", uid) : 0,
        gid: gid !== undefined ? num(spec, "gid", gid) : 0,
        readonly: ro !== undefined ? bool(spec, "ro", ro) : false,
      };
    }
    case "tmpfs": {
      if (!target) throw bad(spec, "a tmpfs mount needs a target");
      const size = get("size");
      const bytes = size !== undefined ? parseSize(size) : undefined;
      if (size !== undefined && bytes === undefined) throw bad(spec, `invalid size "${size}"`);
      return bytes !== undefined ? { type, target, size: bytes } : { type, target };
    }
    case "secret": {
      const id = get("id") || (target ? target.split("/").filter(Boolean).pop() : undefined);
      if (!id) throw bad(spec, "a secret mount needs an id (or a target to name it)");
      const env = get("env") || undefined;
      return {
        type,
        id,
        target: target || (env ? undefined : `/run/secrets/${id}`),
        env,
        required: bool(spec, "required", get("required") ?? "false"),
        mode: mode !== undefined ? num(spec, "mode", mode, 8) : 0o400,
        uid: uid !== undefined ? num(spec, "uid", uid) : 0,
        gid: gid !== undefined ? num(spec, "gid", gid) : 0,
      };
    }
    case "ssh":
      return {
        type,
        id: get("id") || "default",
        target: target || `/run/buildkit/ssh_agent.${sshIndex}`,
        required: bool(spec, "required", get("required") ?? "false"),
        mode: mode !== undefined ? num(spec, "mode", mode, 8) : 0o600,
        uid: uid !== undefined ? num(spec, "uid", uid) : 0,
        gid: gid !== undefined ? num(spec, "gid", gid) : 0,
      };
    default:
      throw bad(spec, `unknown mount type "${type}" (bind, cache, tmpfs, secret, ssh)`);
  }
}

export function parseMounts(specs: readonly string[]): MountSpec[] {
  let ssh = 0;
  return specs.map((s) => {
    const m = parseMount(s, ssh);
    if (m.type === "ssh") ssh++;
    return m;
  });
}
