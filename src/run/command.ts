/**
 * What `ocibuild run` starts, composed as `docker run` does: ENTRYPOINT + CMD from
 * the image; a command given replaces CMD; `--entrypoint` replaces ENTRYPOINT and
 * drops the image's CMD (a command given still follows it); `--entrypoint ""`
 * clears it. And the environment: the image's Env, then the caller's entries.
 */
import { OcibuildError } from "../errors.js";
import type { ContainerConfig } from "../oci/manifest.js";

export interface CommandOverrides {
  /** Replaces the image's ENTRYPOINT (an empty list clears it) and drops its CMD. */
  entrypoint?: string[];
  /** Replaces CMD. An empty list is "none given". */
  command?: string[];
}

export function composeArgv(config: ContainerConfig, o: CommandOverrides, image: string): string[] {
  const entrypoint = o.entrypoint ?? config.Entrypoint ?? [];
  const cmd = o.command !== undefined && o.command.length > 0 ? o.command : o.entrypoint !== undefined ? [] : (config.Cmd ?? []);
  const argv = [...entrypoint, ...cmd];
  if (argv.length === 0) {
    throw new OcibuildError("RUN_NO_COMMAND", `the image ${image} has no ENTRYPOINT or CMD and no command was given`, {
      hint: "give one after the image: ocibuild run IMAGE -- COMMAND ARGS...",
    });
  }
  return argv;
}

/** The image's Env with `extra` (KEY=VALUE) applied on top, keeping the image's order. */
export function mergeEnv(imageEnv: readonly string[], extra: readonly string[]): string[] {
  const out = new Map<string, string>();
  for (const kv of [...imageEnv, ...extra]) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new OcibuildError("RUN_BAD_ENV", `environment entry "${kv}" is not KEY=VALUE`);
    out.set(kv.slice(0, i), kv);
  }
  return [...out.values()];
}

/**
 * `-e` and `--env-file` entries as Docker reads them: KEY=VALUE as written; a bare
 * KEY takes the value from `hostEnv` and is left out when unset there. An env file
 * has one entry a line; blank lines and lines starting with # are skipped.
 */
export function envEntries(entries: readonly string[], hostEnv: Record<string, string | undefined>): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (e.includes("=")) out.push(e);
    else if (e !== "" && hostEnv[e] !== undefined) out.push(`${e}=${hostEnv[e]}`);
  }
  return out;
}

export function envFileLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/^\s+/, ""))
    .filter((l) => l !== "" && !l.startsWith("#"));
}
