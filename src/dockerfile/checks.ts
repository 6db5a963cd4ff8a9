/**
 * BuildKit's build checks (docs.docker.com/reference/build-checks) that need only the
 * parsed Dockerfile: what `ocibuild build --check` (buildx's `--call check`) reports,
 * without building. Rule names, messages and URLs are BuildKit's; `# check=skip=...`
 * and `# check=error=true` are honoured as BuildKit honours them.
 */
import type { Instruction } from "./instructions.js";
import type { ParseResult } from "./parse.js";

export interface CheckWarning {
  rule: string;
  /** What is wrong, as BuildKit words it. */
  detail: string;
  url: string;
  line: number;
  endLine: number;
}

export interface CheckResult {
  warnings: CheckWarning[];
  /** `# check=error=true`: warnings fail the check. */
  error: boolean;
}

const kebab = (rule: string) => rule.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/([A-Z])([A-Z][a-z])/g, "$1-$2").toLowerCase();
const SECRET = /(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)/i;
const SECRET_ALLOWED = /(?:_|^)(?:public|file|version)(?:_|$)/i;
const RESERVED_STAGE_NAMES = ["scratch", "context"];

/** The keyword as written (its casing) and the words after it. */
function words(i: Instruction): string[] {
  return i.original.trim().split(/\s+/);
}

type Emit = (rule: string, detail: string, i: Instruction) => void;

function stageRules(instrs: Instruction[], emit: Emit): void {
  const seen = new Set<string>();
  let stage: Instruction[] = [];
  const endStage = () => {
    for (const kind of ["cmd", "entrypoint", "healthcheck"] as const) {
      const all = stage.filter((x) => x.kind === kind);
      for (const x of all.slice(0, -1)) emit("MultipleInstructionsDisallowed", `Multiple ${kind.toUpperCase()} instructions should not be used in the same stage because only the last one will be used`, x);
    }
    stage = [];
  };
  for (const i of instrs) {
    if (i.kind !== "from") {
      stage.push(i);
      continue;
    }
    endStage();
    if (i.stageName === undefined) continue;
    const w = words(i);
    const as = w.find((x) => x.toLowerCase() === "as") ?? "as";
    const from = w[0]!;
    if ((from === from.toUpperCase()) !== (as === as.toUpperCase())) emit("FromAsCasing", `'${as}' and '${from}' keywords' casing do not match`, i);
    const named = w[w.length - 1]!;
    if (named !== named.toLowerCase()) emit("StageNameCasing", `Stage name '${named}' should be lowercase`, i);
    const name = i.stageName.toLowerCase();
    if (RESERVED_STAGE_NAMES.includes(name)) emit("ReservedStageName", `Stage name should not use the same name as reserved stage "${name}"`, i);
    if (seen.has(name)) emit("DuplicateStageName", `Duplicate stage name "${name}", stage names should be unique`, i);
    seen.add(name);
  }
  endStage();
}

function instructionRules(instrs: Instruction[], emit: Emit): void {
  const keywords = instrs.map((i) => words(i)[0]!);
  const upper = keywords.filter((k) => k === k.toUpperCase()).length;
  const majority = upper >= keywords.length - upper ? "uppercase" : "lowercase";
  let absoluteWorkdir = false;
  for (const [n, i] of instrs.entries()) {
    const kw = keywords[n]!;
    const wanted = majority === "uppercase" ? kw.toUpperCase() : kw.toLowerCase();
    if (kw !== wanted) emit("ConsistentInstructionCasing", `Command '${kw}' should match the case of the command majority (${majority})`, i);
    if (i.kind === "from") absoluteWorkdir = false;
    if ((i.kind === "cmd" || i.kind === "entrypoint") && i.command.form === "shell") {
      emit("JSONArgsRecommended", `JSON arguments recommended for ${i.kind.toUpperCase()} to prevent unintended behavior related to OS signals`, i);
    }
    if (i.kind === "maintainer") emit("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", i);
    if (i.kind === "workdir") {
      if (i.path.startsWith("/") || i.path.startsWith("$")) absoluteWorkdir = true;
      else if (!absoluteWorkdir) emit("WorkdirRelativePath", `Relative workdir "${i.path}" can have unexpected results if the base image changes`, i);
    }
    if ((i.kind === "env" || i.kind === "label") && i.pairs.length === 1 && !(words(i)[1] ?? "").includes("=")) {
      const name = i.kind.toUpperCase();
      emit("LegacyKeyValueFormat", `"${name} key=value" should be used instead of legacy "${name} key value" format`, i);
    }
    const keys = i.kind === "arg" ? i.args.map((a) => a.key) : i.kind === "env" ? i.pairs.map((p) => p.key) : [];
    for (const key of keys) {
      if (SECRET.test(key) && !SECRET_ALLOWED.test(key)) emit("SecretsUsedInArgOrEnv", `Do not use ARG or ENV instructions for sensitive data (${i.kind.toUpperCase()} "${key}")`, i);
    }
    if (i.kind === "expose") {
      for (const p of i.ports) {
        if (p.includes(":")) emit("ExposeInvalidFormat", `EXPOSE instruction should not define an IP address or host-port mapping, found '${p}'`, i);
        const proto = p.split("/")[1];
        if (proto !== undefined && proto !== proto.toLowerCase()) emit("ExposeProtoCasing", `Defined protocol '${p}' in EXPOSE instruction should be lowercase`, i);
      }
    }
  }
}

/** The `# check=` directive: skip=RULE[,RULE] (or all) and error=true, separated by ';'. */
function checkDirective(value: string | undefined): { skip: Set<string>; all: boolean; error: boolean } {
  const out = { skip: new Set<string>(), all: false, error: false };
  for (const part of (value ?? "").split(";")) {
    const [k, v = ""] = part.split("=", 2).map((s) => s.trim());
    if (k === "skip") for (const r of v.split(",").map((s) => s.trim())) r.toLowerCase() === "all" ? (out.all = true) : out.skip.add(r);
    if (k === "error") out.error = v === "true";
  }
  return out;
}

/** Runs the checks over a parsed Dockerfile; warnings in line order. */
export function runChecks(parsed: ParseResult, directive = parsed.directives.check): CheckResult {
  const warnings: CheckWarning[] = [];
  const emit: Emit = (rule, detail, i) => {
    warnings.push({ rule, detail, url: `https://docs.docker.com/go/dockerfile/rule/${kebab(rule)}/`, line: i.range.startLine, endLine: i.range.endLine });
  };
  stageRules(parsed.instructions, emit);
  instructionRules(parsed.instructions, emit);
  // The parser reports the line where the instruction ended; BuildKit points at the whole instruction.
  for (const w of parsed.warnings.filter((x) => x.code === "DOCKERFILE_EMPTY_CONTINUATION" && x.line !== undefined)) {
    const i = parsed.instructions.find((x) => x.range.startLine <= w.line! && w.line! <= x.range.endLine);
    if (i) emit("NoEmptyContinuation", "Empty continuation line", i);
  }
  const d = checkDirective(directive);
  const kept = d.all ? [] : warnings.filter((w) => !d.skip.has(w.rule));
  kept.sort((a, b) => a.line - b.line || a.rule.localeCompare(b.rule));
  return { warnings: kept, error: d.error };
}

/** buildx's report: the count, then each warning with its rule, URL, detail and the lines it points at. */
export function formatChecks(result: CheckResult, file: string, lines: string[]): string {
  const n = result.warnings.length;
  if (n === 0) return "Check complete, no warnings found.\n";
  let out = `Check complete, ${n === 1 ? "1 warning has" : `${n} warnings have`} been found!\n`;
  for (const w of result.warnings) {
    out += `\nWARNING: ${w.rule} - ${w.url}\n${w.detail}\n\n${file}:${w.line === w.endLine ? w.line : `${w.line}-${w.endLine}`}\n--------------------\n`;
    const from = Math.max(1, w.line - 2);
    const to = Math.min(lines.length, w.endLine + 2);
    for (let l = from; l <= to; l++) out += `${String(l).padStart(4)} | ${l >= w.line && l <= w.endLine ? ">>> " : "    "}${lines[l - 1] ?? ""}\n`;
    out += "--------------------\n";
  }
  return out;
}
