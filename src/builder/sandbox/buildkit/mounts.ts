/**
 * RUN --mount for the BuildKit executor: the step's mounts as LLB mounts the
 * daemon provides itself (tmpfs, cache, secret: served over the session), the
 * rest refused by name, and a missing required secret found before the daemon
 * is asked.
 */
import { randomBytes } from "node:crypto";
import { OcibuildError } from "../../../errors.js";
import { missingSecretHint } from "../../mounts.js";
import type { LlbMount, LlbSecretEnv } from "./llb.js";

/**
 * RUN --mount as the remote executor takes it (the shape of the RUN step's parsed
 * mounts). tmpfs, cache and secret mounts are provided by the daemon; bind and ssh
 * mounts are refused by name (they would need the context or an agent shipped over).
 */
export type RemoteMount =
  | { type: "bind"; target: string }
  | { type: "ssh"; target: string }
  | { type: "tmpfs"; target: string; size?: number }
  | { type: "cache"; target: string; id: string; sharing: "shared" | "private" | "locked"; from?: string; source: string; mode: number; uid: number; gid: number; readonly: boolean }
  | { type: "secret"; id: string; target?: string; env?: string; required: boolean; mode: number; uid: number; gid: number };

function unsupportedMount(what: string): OcibuildError {
  return new OcibuildError("BUILDKIT_MOUNT_UNSUPPORTED", `RUN --mount ${what} is not supported with the BuildKit executor`, {
    hint: "the BuildKit executor supports tmpfs, secret and cache mounts (cache with its default source, owner and mode)",
  });
}

/** RUN mounts as LLB mounts and secret env vars; unsupported ones fail by name, missing required secrets fail early. */
export function llbMounts(mounts: readonly RemoteMount[], secrets: ReadonlyMap<string, Buffer>): { mounts: LlbMount[]; secretEnv: LlbSecretEnv[] } {
  const out: LlbMount[] = [];
  const secretEnv: LlbSecretEnv[] = [];
  for (const m of mounts) {
    switch (m.type) {
      case "tmpfs":
        out.push({ type: "tmpfs", target: m.target, ...(m.size !== undefined ? { size: m.size } : {}) });
        break;
      case "cache":
        if (m.from !== undefined || (m.source !== "/" && m.source !== "") || m.uid !== 0 || m.gid !== 0 || m.mode !== 0o755) {
          throw unsupportedMount(`type=cache with from, source, uid, gid or mode (${m.target})`);
        }
        out.push({ type: "cache", target: m.target, id: m.id, sharing: m.sharing, readonly: m.readonly });
        break;
      case "secret": {
        if (m.required && !secrets.has(m.id)) {
          throw new OcibuildError("BUILDKIT_SECRET_MISSING", `RUN --mount=type=secret,id=${m.id} is required but no secret ${m.id} was given`, {
            hint: missingSecretHint(m.id),
          });
        }
        const target = m.target ?? (m.env === undefined ? `/run/secrets/${m.id}` : undefined);
        if (target !== undefined) out.push({ type: "secret", target, id: m.id, uid: m.uid, gid: m.gid, mode: m.mode, optional: !m.required });
        if (m.env !== undefined) secretEnv.push({ id: m.id, name: m.env, optional: !m.required });
        break;
      }
      default:
        throw unsupportedMount(`type=${m.type} (${m.target})`);
    }
  }
  return { mounts: out, secretEnv };
}

/** An optional secret mount nobody serves: never mounted, but it makes the op unique. */
export function runNonce(): LlbMount {
  const id = `ocibuild-run-${randomBytes(16).toString("hex")}`;
  return { type: "secret", target: `/run/${id}`, id, uid: 0, gid: 0, mode: 0o400, optional: true };
}

