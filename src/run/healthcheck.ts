/**
 * `ocibuild run --healthcheck`: the image's HEALTHCHECK command run inside the
 * running container (its namespaces and root, entered with nsenter(1), as the
 * container's user and environment) until it passes or has failed Retries times
 * in a row after the start period, as Docker counts. Docker waits a whole Interval
 * before the first check; this runs the first one as soon as the command started,
 * then waits StartInterval (default 5 s) between checks during StartPeriod and
 * Interval (default 30 s) after it. A command that exits first is unhealthy.
 */
import { childProcess } from "../builtins.js";
import { OcibuildError, optionWords } from "../errors.js";
import type { HealthConfig } from "../oci/manifest.js";
import { effectiveEnv, type RunSpec, type SandboxControl } from "../builder/sandbox/index.js";
import { which } from "../which.js";

export interface HealthReport {
  status: "healthy" | "unhealthy";
  /** Checks run. */
  checks: number;
  /** The last check's exit status (undefined when the command ended before a check passed). */
  exitCode?: number;
  /** The last check's output (at most 4 KiB, as Docker keeps), or why it is unhealthy. */
  output: string;
}

const NS = 1e9;
const MAX_OUTPUT = 4096;

export function healthArgv(test: readonly string[]): string[] | undefined {
  const [kind, ...rest] = test;
  if (kind === "CMD") return rest;
  if (kind === "CMD-SHELL") return ["/bin/sh", "-c", rest.join(" ")];
  return undefined;
}

/** Run checks until a verdict; `ended` aborts when the container's command has exited. */
export async function runHealthcheck(control: SandboxControl, hc: HealthConfig | undefined, spec: RunSpec, ended: AbortSignal): Promise<HealthReport> {
  const argv = healthArgv(hc?.Test ?? []);
  if (argv === undefined || argv.length === 0) throw new OcibuildError("RUN_NO_HEALTHCHECK", "the image's HEALTHCHECK has no command");
  const nsenter = which("nsenter");
  if (nsenter === undefined) throw new OcibuildError("RUN_HEALTHCHECK_UNAVAILABLE", `${optionWords("healthcheck")} needs nsenter on the host (Debian: util-linux)`);
  const interval = (hc?.Interval || 30 * NS) / 1e6;
  const startInterval = (hc?.StartInterval || 5 * NS) / 1e6;
  const startPeriod = (hc?.StartPeriod ?? 0) / 1e6;
  const timeout = (hc?.Timeout || 30 * NS) / 1e6;
  const retries = hc?.Retries || 3;
  const t0 = Date.now();
  let failures = 0;
  for (let checks = 1; ; checks++) {
    if (ended.aborted) return { status: "unhealthy", checks: checks - 1, output: "the command exited before the health check passed" };
    const r = await check(nsenter, control.pid, argv, spec, timeout);
    if (r.exitCode === 0) return { status: "healthy", checks, exitCode: 0, output: r.output };
    const inStart = Date.now() - t0 < startPeriod;
    if (!inStart && ++failures >= retries) return { status: "unhealthy", checks, exitCode: r.exitCode, output: r.output };
    await sleep(inStart ? startInterval : interval, ended);
  }
}

function sleep(ms: number, ended: AbortSignal): Promise<void> {
  return new Promise((done) => {
    const t = setTimeout(finish, ms);
    function finish() {
      clearTimeout(t);
      ended.removeEventListener("abort", finish);
      done();
    }
    ended.addEventListener("abort", finish, { once: true });
  });
}

function check(nsenter: string, pid: number, argv: string[], spec: RunSpec, timeoutMs: number): Promise<{ exitCode: number; output: string }> {
  const env: Record<string, string> = {};
  for (const kv of effectiveEnv(spec)) {
    const i = kv.indexOf("=");
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const args = ["--target", String(pid), "--mount", "--uts", "--ipc", "--net", "--pid", "--root", `--wd=${spec.cwd}`];
  if (spec.uid !== 0 || spec.gid !== 0) args.push(`--setuid=${spec.uid}`, `--setgid=${spec.gid}`);
  return new Promise((done) => {
    const child = childProcess().spawn(nsenter, [...args, "--", ...argv], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const add = (d: Buffer) => {
      if (output.length < MAX_OUTPUT) output = (output + d.toString("utf8")).slice(0, MAX_OUTPUT);
    };
    child.stdout.on("data", add);
    child.stderr.on("data", add);
    const timer = setTimeout(() => {
      output += `\nhealth check timed out after ${timeoutMs / 1000}s`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      done({ exitCode: 127, output: e.message });
    });
    child.on("close", (code, sig) => {
      clearTimeout(timer);
      done({ exitCode: code ?? 128 + (sig === "SIGKILL" ? 9 : 15), output: output.trim() });
    });
  });
}
