/**
 * `ocibuild run [flags] IMAGE [--] [COMMAND ARGS...]`: the image's command in the
 * RUN sandbox, as `docker run --rm` would start it; the exit status is the
 * command's. Flags end at IMAGE: what follows is the command's.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { OcibuildError } from "../../errors.js";
import type { RunMount } from "../../builder/sandbox/index.js";
import { runImage } from "../../run/run.js";
import { envEntries, envFileLines } from "../../run/command.js";
import { type FlagSpec, bool, helpText, list, parseDuration, parseFlags, str } from "../flags.js";
import type { CliIO, Command } from "../io.js";
import { reexecRootless } from "../rootless.js";
import { REGISTRY_FLAGS, platformFrom, registryOptionsFrom } from "./copy.js";

const SPECS: FlagSpec[] = [
  { names: ["env"], short: ["e"], type: "string", repeatable: true, valueName: "KEY=VALUE", description: "set an environment variable (KEY alone: this environment's value)" },
  { names: ["env-file"], type: "string", repeatable: true, valueName: "FILE", description: "read KEY=VALUE lines (# comments) from FILE" },
  { names: ["user"], short: ["u"], type: "string", valueName: "USER[:GROUP]", description: "run as this user (name or uid) instead of the image's USER" },
  { names: ["workdir"], short: ["w"], type: "string", valueName: "DIR", description: "working directory instead of the image's WORKDIR" },
  { names: ["entrypoint"], type: "string", valueName: "CMD", description: "replace the image's ENTRYPOINT (and drop its CMD); \"\" clears it" },
  { names: ["volume"], short: ["v"], type: "string", repeatable: true, valueName: "HOST:CTR[:ro]", description: "bind-mount a host path" },
  { names: ["tmpfs"], type: "string", repeatable: true, valueName: "DIR", description: "mount an empty tmpfs at DIR" },
  { names: ["read-only"], type: "boolean", description: "mount the image's root filesystem read-only" },
  { names: ["network"], type: "string", valueName: "MODE", description: "host (the default), none (only lo), or default (a namespace of its own, outbound through slirp4netns)" },
  { names: ["interactive"], short: ["i"], type: "boolean", description: "pass this terminal's stdin to the command" },
  { names: ["tty"], short: ["t"], type: "boolean", description: "give the command this terminal" },
  { names: ["platform"], type: "string", valueName: "OS/ARCH[/VARIANT]", description: "run this platform's image from an index (foreign ones under qemu-user)" },
  { names: ["timeout"], type: "string", valueName: "DURATION", description: "stop the command after DURATION (90s, 5m): exit status 124" },
  { names: ["keep"], type: "string", valueName: "DIR", description: "keep what the command changed (the upper layer) in DIR, a new directory" },
  { names: ["healthcheck"], type: "boolean", description: "run the image's HEALTHCHECK once the command started, report it, stop; exit 1 when unhealthy" },
  { names: ["cache-dir"], type: "string", valueName: "DIR", description: "cache directory shared with builds (default $XDG_CACHE_HOME/ocibuild or ~/.cache/ocibuild)" },
  ...REGISTRY_FLAGS,
];

const USAGE = `Usage: ocibuild run [flags] IMAGE [--] [COMMAND ARGS...]

Runs IMAGE's ENTRYPOINT and CMD (COMMAND replaces CMD) in the RUN sandbox, on an
overlay of its layers that is thrown away at exit, and exits with the command's
status. IMAGE is a registry reference, oci:DIR[:TAG], oci-archive:FILE[:TAG],
docker-archive:FILE, or the image ID \`ocibuild build --iidfile FILE\` wrote.
Flags go before IMAGE; everything after it is the command's.`;

const EXAMPLES = [
  "ocibuild build --iidfile id.txt --no-push . && ocibuild run $(cat id.txt)",
  "ocibuild run localhost:5000/app:v1 -- python3 -c 'print(1)'",
  "ocibuild run -v \"$PWD/data:/data:ro\" --read-only --network none oci:./layout:v1",
  "ocibuild run --healthcheck --timeout 2m localhost:5000/web:v1",
];

/** Flags end at the first positional (IMAGE): the rest is the container's command. */
function splitAtImage(args: string[]): { flags: string[]; rest: string[] } {
  const takesValue = (a: string) => {
    const spec = a.startsWith("--")
      ? SPECS.find((s) => s.names.includes(a.slice(2)))
      : a.length === 2
        ? SPECS.find((s) => s.short?.includes(a[1]!))
        : undefined;
    return spec?.type === "string";
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") return { flags: args.slice(0, i), rest: args.slice(i + 1) };
    if (!a.startsWith("-") || a === "-") return { flags: args.slice(0, i), rest: args.slice(i) };
    if (!a.includes("=") && takesValue(a)) i++;
  }
  return { flags: args, rest: [] };
}

function mountsFrom(volumes: string[], tmpfs: string[], cwd: string): RunMount[] {
  const mounts: RunMount[] = volumes.map((v) => {
    const parts = v.split(":");
    const [source, target, mode] = parts;
    if (parts.length < 2 || parts.length > 3 || !source || !target || (mode !== undefined && mode !== "ro" && mode !== "rw")) {
      throw new OcibuildError("USAGE_BAD_VALUE", `-v takes HOST:CONTAINER[:ro|rw], not "${v}"`);
    }
    return { type: "bind", source: resolve(cwd, source), target, readonly: mode === "ro" };
  });
  for (const t of tmpfs) mounts.push({ type: "tmpfs", target: t.split(":")[0]! });
  return mounts;
}

function networkFrom(v: string | undefined): "host" | "none" | "default" | undefined {
  if (v === undefined || v === "host" || v === "none" || v === "default") return v;
  throw new OcibuildError("USAGE_BAD_VALUE", `--network takes host, none or default, not "${v}"`);
}

async function envFrom(p: ReturnType<typeof parseFlags>, io: CliIO): Promise<string[]> {
  const entries: string[] = [];
  for (const f of list(p, "env-file")) {
    const text = await readFile(resolve(io.cwd, f), "utf8").catch((e: NodeJS.ErrnoException) => {
      throw new OcibuildError("USAGE_BAD_VALUE", `cannot read --env-file ${f}: ${e.code ?? e.message}`, { file: f });
    });
    entries.push(...envFileLines(text));
  }
  return envEntries([...entries, ...list(p, "env")], io.env);
}

export const runCommand: Command = async (args, io, signal) => {
  const rootless = await reexecRootless("run", args, io, signal);
  if (rootless !== undefined) return rootless;
  const { flags, rest } = splitAtImage(args);
  const p = parseFlags(flags, SPECS);
  if (bool(p, "help")) {
    io.stdout.write(helpText(USAGE, SPECS, EXAMPLES));
    return 0;
  }
  const [image, ...command] = rest[0] === "--" ? rest.slice(1) : rest;
  if (image === undefined) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "run needs an image", { hint: "ocibuild run [flags] IMAGE [COMMAND ARGS...]" });
  const entrypoint = str(p, "entrypoint");
  const timeout = str(p, "timeout");
  // The first SIGINT or SIGTERM aborts `signal` (main.ts), which passes it on; every later
  // one, and SIGHUP, is passed on here (and no longer ends this process).
  let aborting = false;
  let forward: ((sig: NodeJS.Signals) => void) | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (sig !== "SIGHUP" && !aborting) aborting = true;
    else forward?.(sig);
  };
  for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(s, onSignal);
  try {
    const r = await runImage({
      image,
      command: command.length > 0 ? command : undefined,
      entrypoint: entrypoint === undefined ? undefined : entrypoint === "" ? [] : [entrypoint],
      env: await envFrom(p, io),
      user: str(p, "user"),
      workdir: str(p, "workdir"),
      mounts: mountsFrom(list(p, "volume"), list(p, "tmpfs"), io.cwd),
      network: networkFrom(str(p, "network")),
      readOnly: bool(p, "read-only"),
      tty: bool(p, "tty"),
      stdin: bool(p, "interactive") ? "inherit" : undefined,
      platform: platformFrom(p),
      timeoutSeconds: timeout === undefined ? undefined : parseDuration(timeout, "timeout"),
      keep: str(p, "keep") === undefined ? undefined : resolve(io.cwd, str(p, "keep")!),
      healthcheck: bool(p, "healthcheck"),
      cacheDir: str(p, "cache-dir"),
      // Pull progress lines would mix with the command's own output: none.
      registry: { ...registryOptionsFrom(p, io), onProgress: undefined },
      hostEnv: io.env,
      signal,
      onOutput: (stream, chunk) => (stream === "stdout" ? io.stdout : io.stderr).write(chunk),
      onEvent: (e) => {
        if (e.type === "log" && e.level === "warn") io.stderr.write(`warning: ${e.message}\n`);
      },
      onStart: (control) => (forward = (sig) => control.kill(sig)),
    });
    if (r.health) io.stderr.write(`health check: ${r.health.status} after ${r.health.checks} check(s)${r.health.output ? `\n${r.health.output}` : ""}\n`);
    if (r.kept) io.stderr.write(`kept the container's changes in ${r.kept}\n`);
    if (r.timedOut) {
      io.stderr.write(`run: stopped after --timeout ${timeout}\n`);
      return 124;
    }
    if (r.health) return r.health.status === "healthy" ? 0 : 1;
    return r.exitCode;
  } finally {
    for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(s, onSignal);
  }
};
