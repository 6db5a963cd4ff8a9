/**
 * Instructions that only change the image config (and history): ENV, LABEL,
 * EXPOSE, USER, CMD, ENTRYPOINT, STOPSIGNAL, VOLUME, HEALTHCHECK, SHELL, ONBUILD,
 * MAINTAINER. The instruction arrives expanded (expandInstruction: exactly the
 * arguments BuildKit expands).
 */
import type { Instruction, CommandForm, HealthcheckInstr } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import type { HealthConfig } from "../../oci/manifest.js";
import { addHistory, setEnv, shellOf, withConfig, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { metadataStep, type Step } from "./step.js";

export type ConfigInstr = Extract<
  Instruction,
  { kind: "env" | "label" | "expose" | "user" | "cmd" | "entrypoint" | "stopsignal" | "volume" | "healthcheck" | "shell" | "onbuild" | "maintainer" }
>;

function nop(state: StageState, text: string): StageState {
  return addHistory(state, { created_by: text, comment: "ocibuild.dockerfile.v0", empty_layer: true });
}

function commandArgs(state: StageState, c: CommandForm): string[] {
  return c.form === "exec" ? [...c.args] : [...shellOf(state), c.text];
}

function commandText(kind: string, args: string[]): string {
  return `${kind} ${JSON.stringify(args)}`;
}

export const configStep: Step<ConfigInstr> = metadataStep((state, instr, env) => applyConfig(state, instr, env.ctx));

function applyConfig(state: StageState, instr: ConfigInstr, ctx: StepContext): StageState {
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  switch (instr.kind) {
    case "env": {
      let list = state.config.Env ?? [];
      const args = { ...state.args };
      const parts: string[] = [];
      for (const { key, value } of instr.pairs) {
        list = setEnv(list, key, value);
        delete args[key]; // the ENV is now the value in force
        parts.push(`${key}=${value}`);
      }
      return nop({ ...withConfig(state, { Env: list }), args }, `ENV ${parts.join(" ")}`);
    }
    case "label": {
      const labels = { ...(state.config.Labels ?? {}) };
      const parts: string[] = [];
      for (const { key, value } of instr.pairs) {
        labels[key] = value;
        parts.push(`${key}=${value}`);
      }
      return nop(withConfig(state, { Labels: labels }), `LABEL ${parts.join(" ")}`);
    }
    case "expose": {
      const ports = { ...(state.config.ExposedPorts ?? {}) };
      const shown: string[] = [];
      for (const word of instr.ports) {
        for (const p of exposedPorts(word)) {
          if (p === null) {
            throw dockerfileError("DOCKERFILE_INVALID_PORT", `invalid port "${word}" in EXPOSE`, loc, instr.range.startLine, instr.range.endLine);
          }
          ports[p] = {};
          shown.push(p);
        }
      }
      return nop(withConfig(state, { ExposedPorts: ports }), `EXPOSE ${shown.join(" ")}`);
    }
    case "user": {
      return nop(withConfig(state, { User: instr.user }), `USER ${instr.user}`);
    }
    case "cmd": {
      const args = commandArgs(state, instr.command);
      return { ...nop(withConfig(state, { Cmd: args }), commandText("CMD", args)), cmdSet: true };
    }
    case "entrypoint": {
      const args = commandArgs(state, instr.command);
      // An ENTRYPOINT resets a CMD inherited from the base image, not one set in this stage.
      const patch = state.cmdSet ? { Entrypoint: args } : { Entrypoint: args, Cmd: null };
      return nop(withConfig(state, patch), commandText("ENTRYPOINT", args));
    }
    case "stopsignal": {
      const sig = instr.signal;
      if (!/^(SIG[A-Z0-9+-]+|[A-Z0-9+-]+|\d+)$/.test(sig)) {
        throw dockerfileError("DOCKERFILE_INVALID_SIGNAL", `invalid STOPSIGNAL "${sig}"`, loc, instr.range.startLine, instr.range.endLine);
      }
      return nop(withConfig(state, { StopSignal: sig }), `STOPSIGNAL ${sig}`);
    }
    case "volume": {
      const vols = { ...(state.config.Volumes ?? {}) };
      const shown: string[] = [];
      for (const v of instr.paths) {
        if (v.trim() === "") {
          throw dockerfileError("DOCKERFILE_EMPTY_VOLUME", "VOLUME specified can not be an empty string", loc, instr.range.startLine, instr.range.endLine);
        }
        vols[v] = {};
        shown.push(v);
      }
      return nop(withConfig(state, { Volumes: vols }), `VOLUME [${shown.join(" ")}]`);
    }
    case "healthcheck":
      return nop(withConfig(state, { Healthcheck: healthConfig(instr, ctx) }), `HEALTHCHECK ${instr.test === "NONE" ? "NONE" : JSON.stringify(instr.test)}`);
    case "shell":
      return nop(withConfig(state, { Shell: [...instr.shell] }), `SHELL ${JSON.stringify(instr.shell)}`);
    case "onbuild":
      return nop(withConfig(state, { OnBuild: [...(state.config.OnBuild ?? []), instr.triggerText] }), `ONBUILD ${instr.triggerText}`);
    case "maintainer": {
      return { ...nop(state, `MAINTAINER ${instr.name}`), author: instr.name };
    }
  }
}

/** EXPOSE values: "80", "80/tcp", "53/udp", "8000-8002/tcp" -> "80/tcp" ...; null for an invalid one. */
export function exposedPorts(word: string): (string | null)[] {
  const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(word);
  if (!m) return [null];
  const proto = (m[3] ?? "tcp").toLowerCase();
  const start = Number(m[1]);
  const end = m[2] !== undefined ? Number(m[2]) : start;
  if (start < 0 || end > 65535 || end < start) return [null];
  const out: string[] = [];
  for (let p = start; p <= end; p++) out.push(`${p}/${proto}`);
  return out;
}

/** Go duration ("30s", "1m30s", "500ms") to nanoseconds. */
export function parseDuration(s: string): number | null {
  if (s === "0") return 0;
  // µ written as an escape: the CLI bundle must stay ASCII (scripts/bundle.mjs says why).
  const re = /(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)/g;
  const unit: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    if (m.index !== consumed) return null;
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  return consumed === s.length && consumed > 0 ? Math.round(total) : null;
}

function healthConfig(instr: HealthcheckInstr, ctx: StepContext): HealthConfig {
  if (instr.test === "NONE") return { Test: ["NONE"] };
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const hc: HealthConfig = { Test: [...instr.test] };
  const dur = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const d = parseDuration(v);
    if (d === null || d < 0) {
      throw dockerfileError("DOCKERFILE_INVALID_DURATION", `invalid --${name} duration "${v}"`, loc, instr.range.startLine, instr.range.endLine);
    }
    return d;
  };
  const interval = dur("interval", instr.interval);
  const timeout = dur("timeout", instr.timeout);
  const startPeriod = dur("start-period", instr.startPeriod);
  const startInterval = dur("start-interval", instr.startInterval);
  if (interval !== undefined) hc.Interval = interval;
  if (timeout !== undefined) hc.Timeout = timeout;
  if (startPeriod !== undefined) hc.StartPeriod = startPeriod;
  if (startInterval !== undefined) hc.StartInterval = startInterval;
  if (instr.retries !== undefined) {
    const r = Number(instr.retries);
    if (!Number.isInteger(r) || r < 0) {
      throw dockerfileError("DOCKERFILE_INVALID_RETRIES", `invalid --retries value "${instr.retries}"`, loc, instr.range.startLine, instr.range.endLine);
    }
    hc.Retries = r;
  }
  return hc;
}
