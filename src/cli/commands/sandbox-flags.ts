/**
 * docker build's flags for what every RUN gets: --add-host (lines in /etc/hosts),
 * --shm-size (a sized tmpfs at /dev/shm) and --ulimit (resource limits), read as
 * docker reads them. They apply to the bubblewrap executor.
 */
import { isIP } from "node:net";
import { OcibuildError } from "../../errors.js";
import type { BuildOptions } from "../../api.js";
import type { Ulimit } from "../../builder/sandbox/bwrap.js";
import { type FlagSpec, type ParsedFlags, list, parseSize, str } from "../flags.js";

export const SANDBOX_FLAGS: FlagSpec[] = [
  { names: ["add-host"], type: "string", repeatable: true, valueName: "HOST:IP", description: "Add a line to every RUN's /etc/hosts (HOST=IP also works)" },
  { names: ["shm-size"], type: "string", valueName: "SIZE", description: "Size of the tmpfs at /dev/shm in RUN (e.g. 64m; default: an unsized /dev/shm)" },
  { names: ["ulimit"], type: "string", repeatable: true, valueName: "NAME=SOFT[:HARD]", description: "A resource limit for RUN, e.g. nofile=1024:2048 (-1 or unlimited: none)" },
];

/** The resource names docker's --ulimit takes; prlimit(1) spells them the same. */
const ULIMITS = ["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"];

const usage = (flag: string, message: string, hint?: string) => new OcibuildError("USAGE_BAD_VALUE", `--${flag} ${message}`, { hint, details: { flag: `--${flag}` } });

/** docker's --add-host: HOST:IP (split at the first colon, so an IPv6 address keeps its own) or HOST=IP. */
export function parseAddHost(v: string): [string, string] {
  const sep = /[=:]/.exec(v);
  const host = sep ? v.slice(0, sep.index) : "";
  const ip = sep ? v.slice(sep.index + 1).replace(/^\[(.*)\]$/, "$1") : "";
  if (ip === "host-gateway") throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `--add-host ${v}: host-gateway is not supported`, { hint: "give the host's address, e.g. --add-host HOST:$(hostname -I | cut -d' ' -f1)", details: { flag: "--add-host" } });
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host) || isIP(ip) === 0) throw usage("add-host", `takes HOST:IP, e.g. db.local:10.0.0.5, not "${v}"`);
  return [host, ip];
}

function limitValue(n: string, whole: string): string {
  if (n === "-1" || n === "unlimited") return "unlimited";
  if (!/^[0-9]+$/.test(n)) throw usage("ulimit", `${whole}: a limit is a whole number, -1 or unlimited`);
  return n;
}

/** docker's --ulimit NAME=SOFT[:HARD] (HARD defaults to SOFT). */
export function parseUlimit(v: string): Ulimit {
  const m = /^([a-z]+)=([^:]+)(?::(.+))?$/.exec(v);
  if (!m) throw usage("ulimit", `takes NAME=SOFT[:HARD], e.g. nofile=1024:2048, not "${v}"`);
  const name = m[1]!;
  if (!ULIMITS.includes(name)) throw usage("ulimit", `${v}: unknown limit "${name}"`, `known: ${ULIMITS.join(", ")}`);
  const soft = limitValue(m[2]!, v);
  const hard = limitValue(m[3] ?? m[2]!, v);
  if (soft !== "unlimited" && (hard === "unlimited" ? false : Number(soft) > Number(hard))) throw usage("ulimit", `${v}: the soft limit is above the hard one`);
  if (soft === "unlimited" && hard !== "unlimited") throw usage("ulimit", `${v}: the soft limit is above the hard one`);
  return { name, soft, hard };
}

/** BuildOptions.sandbox from the flags; refused with --executor buildkit, which has its own daemon settings. */
export function applySandboxFlags(p: ParsedFlags, options: BuildOptions, executor: string): void {
  const sandbox: NonNullable<BuildOptions["sandbox"]> = {};
  const hosts = list(p, "add-host").map(parseAddHost);
  if (hosts.length > 0) sandbox.extraHosts = hosts;
  const shm = str(p, "shm-size");
  if (shm !== undefined) sandbox.shmSize = parseSize(shm, "shm-size");
  const ulimits = list(p, "ulimit").map(parseUlimit);
  if (ulimits.length > 0) sandbox.ulimits = ulimits;
  if (Object.keys(sandbox).length === 0) return;
  if (executor === "buildkit") {
    const flag = hosts.length > 0 ? "add-host" : shm !== undefined ? "shm-size" : "ulimit";
    throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `flag --${flag} is not supported with --executor buildkit: it applies to the bubblewrap sandbox`, {
      hint: "leave out --executor buildkit, or configure the BuildKit daemon's workers",
      details: { flag: `--${flag}` },
    });
  }
  options.sandbox = sandbox;
}
