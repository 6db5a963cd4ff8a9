/**
 * Stages and build arguments: global ARGs (before the first FROM) with
 * --build-arg overrides and the automatic platform args, FROM expansion, named
 * stages, --target, the stage dependency graph (FROM, COPY --from, RUN --mount
 * from=), reachability and a dependency order. Pure: no I/O.
 */
import { type SourceContext, type ParseWarning, dockerfileError, suggest } from "./diagnostics.js";
import type { FromInstr, Instruction } from "./instructions.js";
import type { ParseResult } from "./parse.js";
import { OcibuildError, optionWords } from "../errors.js";
import { expandWord } from "./shell-words.js";
import { formatPlatform, parsePlatform, type Platform } from "../oci/platform.js";

export { formatPlatform, type Platform };

export interface StagePlanOptions {
  /** --build-arg values. */
  buildArgs?: Record<string, string>;
  /** --target: a stage name. Default: the last stage. */
  target?: string;
  buildPlatform: Platform;
  targetPlatform: Platform;
}

export interface Stage {
  index: number;
  /** `AS name`, lower-cased. */
  name?: string;
  /** FROM image after expansion with the global args (a stage name when baseStage is set). */
  base: string;
  /** Set when FROM names an earlier stage. */
  baseStage?: number;
  /** FROM --platform, expanded, parsed and normalised. */
  platform?: Platform;
  /** The instructions after FROM, up to the next FROM. */
  instructions: Instruction[];
  from: FromInstr;
  /** Stages this one needs (FROM, COPY --from, RUN --mount from=), by index, sorted, no duplicates. */
  dependsOn: number[];
  /** ARG values visible in FROM lines (automatic platform args + global ARGs); an in-stage `ARG X` without value takes X from here. */
  globalArgs: Record<string, string>;
}

export interface StagePlan {
  /** All stages, in file order. */
  stages: Stage[];
  /** Index of the target stage. */
  target: number;
  /** Stages the target needs, dependencies first, the target last; unreachable stages are left out. */
  order: number[];
  warnings: ParseWarning[];
  /** --build-arg keys no ARG declares (proxy and platform args excepted). */
  unusedBuildArgs: string[];
}

/** Predefined proxy args: usable without an ARG, and kept out of the image history. */
export const PROXY_ARGS: string[] = [
  "HTTP_PROXY",
  "http_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "FTP_PROXY",
  "ftp_proxy",
  "NO_PROXY",
  "no_proxy",
  "ALL_PROXY",
  "all_proxy",
];

/** The automatic platform args (BUILDPLATFORM ... TARGETVARIANT). */
export function platformArgs(build: Platform, target: Platform): Record<string, string> {
  return {
    BUILDPLATFORM: formatPlatform(build),
    BUILDOS: build.os,
    BUILDARCH: build.architecture,
    BUILDVARIANT: build.variant ?? "",
    TARGETPLATFORM: formatPlatform(target),
    TARGETOS: target.os,
    TARGETARCH: target.architecture,
    TARGETVARIANT: target.variant ?? "",
  };
}

const AUTOMATIC_ARGS: ReadonlySet<string> = new Set([...Object.keys(platformArgs({ os: "", architecture: "" }, { os: "", architecture: "" })), "TARGETSTAGE"]);

/** FROM --platform's expanded value, parsed as --platform is; a bad one names the FROM line. */
function fromPlatform(text: string, host: Platform, ctx: SourceContext, from: FromInstr): Platform {
  try {
    return parsePlatform(text, host);
  } catch (e) {
    if (!(e instanceof OcibuildError)) throw e;
    throw dockerfileError("DOCKERFILE_FROM", `FROM --platform: ${e.message}`, ctx, from.range.startLine, from.range.endLine, { hint: e.hint });
  }
}

/** What planning a file carries from step to step: where errors point, the escape token, the warnings so far. */
interface Planning {
  ctx: SourceContext;
  escapeToken: "\\" | "`";
  buildArgs: Record<string, string>;
  warnings: ParseWarning[];
}

/** The global scope: the ARGs before the first FROM and their values, and the names they declare. */
interface GlobalScope {
  args: Record<string, string>;
  declared: Set<string>;
}

type RawStage = { from: FromInstr; instructions: Instruction[] };

export function planStages(parsed: ParseResult, opts: StagePlanOptions): StagePlan {
  const p: Planning = {
    ctx: { file: parsed.file, lines: parsed.lines },
    escapeToken: parsed.directives.escape,
    buildArgs: opts.buildArgs ?? {},
    warnings: [],
  };
  const { globals, raw } = splitStages(parsed);
  const scope = globalScope(p, globals, opts);
  const byName = new Map<string, number>();
  const stages = raw.map((r, index) => makeStage(p, r, index, scope, byName, opts.buildPlatform));
  const edges = linkStages(p, stages, byName);
  const target = opts.target === undefined ? stages.length - 1 : findTarget(opts.target, byName, parsed.file);
  const order = dependencyOrder(stages, edges, target, p.ctx);
  return { stages, target, order, warnings: p.warnings, unusedBuildArgs: unusedBuildArgs(p.buildArgs, scope.declared, stages, order) };
}

/** The instructions before the first FROM, and each FROM with the instructions up to the next. */
function splitStages(parsed: ParseResult): { globals: Instruction[]; raw: RawStage[] } {
  const globals: Instruction[] = [];
  const raw: RawStage[] = [];
  for (const instr of parsed.instructions) {
    if (instr.kind === "from") raw.push({ from: instr, instructions: [] });
    else if (raw.length === 0) globals.push(instr);
    else raw[raw.length - 1]!.instructions.push(instr);
  }
  if (raw.length === 0) {
    throw new OcibuildError("DOCKERFILE_NO_STAGE", `${parsed.file}: the Dockerfile has no FROM: no stages to build`, {
      file: parsed.file,
      hint: "add a FROM instruction",
    });
  }
  return { globals, raw };
}

/** Automatic args (a build arg overrides them), then the ARGs before the first FROM, each seeing the ones before it. */
function globalScope(p: Planning, globals: Instruction[], opts: StagePlanOptions): GlobalScope {
  const args: Record<string, string> = {};
  const automatic: Record<string, string> = {
    ...platformArgs(opts.buildPlatform, opts.targetPlatform),
    TARGETSTAGE: opts.target ?? "default",
  };
  for (const [k, v] of Object.entries(automatic)) args[k] = Object.hasOwn(p.buildArgs, k) ? p.buildArgs[k]! : v;
  const declared = new Set<string>();
  for (const instr of globals) {
    if (instr.kind !== "arg") continue;
    for (const a of instr.args) {
      declared.add(a.key);
      let value: string | undefined;
      if (Object.hasOwn(p.buildArgs, a.key)) value = p.buildArgs[a.key];
      else if (a.value !== undefined) value = expandOrFail(a.value, args, p.escapeToken, p.ctx, instr);
      if (value !== undefined) args[a.key] = value;
    }
  }
  return { args, declared };
}

/** One stage: FROM's image and platform expanded, its base resolved to an earlier stage, its name recorded in `byName`. */
function makeStage(p: Planning, r: RawStage, index: number, scope: GlobalScope, byName: Map<string, number>, host: Platform): Stage {
  const unset = new Set<string>();
  const expand = (word: string) => expandOrFail(word, scope.args, p.escapeToken, p.ctx, r.from, (n) => unset.add(n));
  const base = expand(r.from.image);
  if (base === "") {
    throw dockerfileError("DOCKERFILE_FROM", `base name (${r.from.image}) should not be blank`, p.ctx, r.from.range.startLine, r.from.range.endLine, {
      hint: unset.size > 0 ? `declare ${[...unset].join(", ")} with ARG before the first FROM, or pass it with ${optionWords("buildArgs")}` : undefined,
    });
  }
  let platform: Platform | undefined;
  if (r.from.platform !== undefined) {
    const text = expand(r.from.platform);
    if (text === "") {
      throw dockerfileError("DOCKERFILE_FROM", `empty platform value from expression ${r.from.platform}`, p.ctx, r.from.range.startLine, r.from.range.endLine);
    }
    platform = fromPlatform(text, host, p.ctx, r.from);
  }
  const line = r.from.range.startLine;
  for (const n of unset) {
    if (!scope.declared.has(n)) p.warnings.push({ code: "DOCKERFILE_UNDEFINED_ARG_IN_FROM", message: `FROM argument '${n}' is not declared`, line });
  }
  const baseStage = byName.get(base.toLowerCase());
  const name = r.from.stageName;
  if (name !== undefined) {
    if (byName.has(name)) {
      p.warnings.push({ code: "DOCKERFILE_DUPLICATE_STAGE_NAME", message: `Duplicate stage name "${name}", stage names should be unique`, line });
    }
    byName.set(name, index);
  }
  const dependsOn = baseStage === undefined ? [] : [baseStage];
  return { index, name, base, baseStage, platform, instructions: r.instructions, from: r.from, dependsOn, globalArgs: { ...scope.args } };
}

/**
 * Dependencies from COPY --from and RUN --mount from= (names resolve against all
 * stages) added to each stage's dependsOn. The result maps, per stage, each
 * dependency to the instruction that introduced it (for error lines).
 */
function linkStages(p: Planning, stages: Stage[], byName: Map<string, number>): Map<number, Instruction>[] {
  const edges: Map<number, Instruction>[] = stages.map((s) => new Map(s.dependsOn.map((d) => [d, s.from])));
  for (const stage of stages) {
    for (const instr of stage.instructions) {
      for (const ref of stageRefs(instr, p.ctx)) {
        const dep = resolveRef(ref, stages, byName, p.ctx, instr);
        if (dep !== undefined && !edges[stage.index]!.has(dep)) edges[stage.index]!.set(dep, instr);
      }
    }
    stage.dependsOn = [...edges[stage.index]!.keys()].sort((a, b) => a - b);
  }
  return edges;
}

/** The index of the stage named `target`; an unknown name suggests a near one or lists the names. */
function findTarget(target: string, byName: Map<string, number>, file: string): number {
  const t = byName.get(target.toLowerCase());
  if (t !== undefined) return t;
  const near = suggest(target, [...byName.keys()], false);
  throw new OcibuildError("DOCKERFILE_BAD_TARGET", `target stage "${target}" could not be found`, {
    file,
    hint:
      near !== undefined
        ? `did you mean ${near}?`
        : byName.size > 0
          ? `stages: ${[...byName.keys()].join(", ")}`
          : "the Dockerfile has no named stages (use FROM image AS name)",
  });
}

/** Build args that no ARG of a built stage (or the global scope) declares, predefined ones apart; sorted. */
function unusedBuildArgs(buildArgs: Record<string, string>, declared: Set<string>, stages: Stage[], order: number[]): string[] {
  const consumed = new Set(declared);
  for (const i of order) {
    for (const instr of stages[i]!.instructions) if (instr.kind === "arg") for (const a of instr.args) consumed.add(a.key);
  }
  return Object.keys(buildArgs)
    .filter((k) => !consumed.has(k) && !PROXY_ARGS.includes(k) && !AUTOMATIC_ARGS.has(k))
    .filter((k) => !k.startsWith("BUILDKIT_") && k !== "SOURCE_DATE_EPOCH")
    .sort();
}

function expandOrFail(
  word: string,
  env: Record<string, string>,
  escapeToken: "\\" | "`",
  ctx: SourceContext,
  instr: Instruction,
  onUnset?: (name: string) => void,
): string {
  try {
    return expandWord(word, env, { escapeToken, onUnset });
  } catch (e) {
    if (e instanceof OcibuildError) {
      throw dockerfileError(e.code, e.message, ctx, instr.range.startLine, instr.range.endLine, { cause: e });
    }
    throw e;
  }
}

/** Raw stage references of an instruction: COPY --from, RUN --mount ...,from=. */
function stageRefs(instr: Instruction, ctx: SourceContext): { value: string; index: boolean }[] {
  if (instr.kind === "copy" && instr.from !== undefined) {
    let expanded: string;
    try {
      expanded = expandWord(instr.from, {});
    } catch {
      expanded = "";
    }
    if (expanded !== instr.from) {
      throw dockerfileError(
        "DOCKERFILE_COPY_FROM",
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
        ctx,
        instr.range.startLine,
        instr.range.endLine,
      );
    }
    return [{ value: instr.from, index: /^[+-]?[0-9]+$/.test(instr.from) }];
  }
  return instructionSources(instr).map((value) => ({ value, index: false }));
}

/** What an instruction names as a source stage or image, unexpanded: COPY --from's, each RUN --mount's from=. */
export function instructionSources(instr: Instruction): string[] {
  if (instr.kind === "copy") return instr.from === undefined ? [] : [instr.from];
  if (instr.kind !== "run") return [];
  const out: string[] = [];
  for (const m of instr.mounts) {
    for (const field of splitCsv(m)) {
      const eq = field.indexOf("=");
      if (eq > 0 && field.slice(0, eq).trim().toLowerCase() === "from") out.push(field.slice(eq + 1));
    }
  }
  return out;
}

/** A mount spec's comma-separated fields, honouring double quotes like Go's encoding/csv. */
function splitCsv(s: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '"') {
      if (quoted && s[i + 1] === '"') {
        cur += '"';
        i++;
      } else quoted = !quoted;
    } else if (ch === "," && !quoted) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

function resolveRef(
  ref: { value: string; index: boolean },
  stages: Stage[],
  byName: Map<string, number>,
  ctx: SourceContext,
  instr: Instruction,
): number | undefined {
  if (ref.index) {
    const n = Number(ref.value);
    if (!Number.isSafeInteger(n) || n < 0 || n >= stages.length) {
      throw dockerfileError("DOCKERFILE_UNKNOWN_STAGE", `invalid stage index ${ref.value}`, ctx, instr.range.startLine, instr.range.endLine, {
        hint: `stage indexes run from 0 to ${stages.length - 1}`,
      });
    }
    return n;
  }
  // An unknown name is an image reference (COPY --from=alpine:3 ...), as in BuildKit.
  return byName.get(ref.value.toLowerCase());
}

/** Reachable stages from `target`, dependencies first; a cycle is an error naming the line that closes it. */
function dependencyOrder(stages: Stage[], edges: Map<number, Instruction>[], target: number, ctx: SourceContext): number[] {
  const state = new Map<number, "visiting" | "done">();
  const order: number[] = [];
  const label = (k: number) => stages[k]!.name ?? `stage-${k}`;
  const visit = (i: number, path: number[]) => {
    const s = state.get(i);
    if (s === "done") return;
    if (s === "visiting") {
      const cycle = [...path.slice(path.indexOf(i)), i].map(label);
      const closing = edges[path[path.length - 1]!]!.get(i)!;
      throw dockerfileError(
        "DOCKERFILE_STAGE_CYCLE",
        `circular dependency detected on stage: ${label(i)} (${cycle.join(" -> ")})`,
        ctx,
        closing.range.startLine,
        closing.range.endLine,
        { hint: "a stage cannot use itself, directly or through other stages" },
      );
    }
    state.set(i, "visiting");
    for (const d of stages[i]!.dependsOn) visit(d, [...path, i]);
    state.set(i, "done");
    order.push(i);
  };
  visit(target, []);
  return order;
}

/** The stage of `plan` named `nameOrIndex` (names in any case, as BuildKit), or at that index. */
export function findStage(plan: StagePlan, nameOrIndex: string): Stage | undefined {
  const lower = nameOrIndex.toLowerCase();
  return plan.stages.find((s) => s.name?.toLowerCase() === lower) ?? (/^\d+$/.test(nameOrIndex) ? plan.stages[Number(nameOrIndex)] : undefined);
}
