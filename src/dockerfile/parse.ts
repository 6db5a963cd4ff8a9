/**
 * parseDockerfile: text -> directives, AST, typed instructions and warnings.
 */
import { OcibuildError } from "../errors.js";
import type { Node } from "./ast.js";
import { convertNode } from "./convert.js";
import { type ParseWarning, dockerfileError } from "./diagnostics.js";
import type { Instruction } from "./instructions.js";
import { LineParseError } from "./line-parsers.js";
import { type Directives, parseAst } from "./parser.js";

export type { ParseWarning } from "./diagnostics.js";
export type { Directives } from "./parser.js";

export interface ParseResult {
  directives: Directives;
  /** BuildKit-shaped root node (children = instructions). */
  ast: Node;
  /** Every instruction in file order (global ARGs, then each FROM and its stage). */
  instructions: Instruction[];
  warnings: ParseWarning[];
  file: string;
  /** Source lines without terminators, for error snippets. */
  lines: string[];
}

export interface ParseOptions {
  /** File name used in errors ("Dockerfile:12"). Default "Dockerfile". */
  file?: string;
}

/** Frontends ocibuild implements itself; any other `# syntax=` image is reported and ignored. */
const BUILTIN_SYNTAX = /^(?:(?:docker\.io\/)?docker\/dockerfile(?:-upstream)?)(?::[A-Za-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?$/;

/**
 * Parse a Dockerfile. Throws OcibuildError with a DOCKERFILE_* code, the file and
 * line, the offending lines as a snippet, and a hint where one helps.
 */
export function parseDockerfile(text: string, opts: ParseOptions = {}): ParseResult {
  const file = opts.file ?? "Dockerfile";
  const parsed = parseAst(text, file);
  const ctx = { file, lines: parsed.lines };
  const warnings = [...parsed.warnings];
  const syntax = parsed.directives.syntax;
  if (syntax !== undefined) {
    const image = syntax.split(" ")[0]!;
    if (!BUILTIN_SYNTAX.test(image)) {
      warnings.push({
        code: "DOCKERFILE_SYNTAX_IGNORED",
        message: `# syntax=${syntax}: ocibuild cannot run external frontends; parsing as a standard Dockerfile`,
        line: directiveLine(parsed.lines, "syntax"),
      });
    }
  }
  const instructions: Instruction[] = [];
  let seenFrom = false;
  for (const child of parsed.ast.children) {
    const range = { startLine: child.startLine, endLine: child.endLine };
    let instr: Instruction;
    try {
      instr = convertNode(child, range);
    } catch (e) {
      if (e instanceof LineParseError) {
        throw dockerfileError(e.code, e.message, ctx, range.startLine, range.endLine, { hint: e.hint });
      }
      if (e instanceof OcibuildError) throw dockerfileError(e.code, e.message, ctx, range.startLine, range.endLine, { cause: e });
      throw e;
    }
    if (instr.kind === "from") seenFrom = true;
    else if (!seenFrom && instr.kind !== "arg") {
      throw dockerfileError(
        "DOCKERFILE_NO_STAGE",
        `${child.value.toUpperCase()} before the first FROM: no build stage in current context`,
        ctx,
        range.startLine,
        range.endLine,
        { hint: "only ARG may come before the first FROM" },
      );
    }
    if (instr.kind === "arg") {
      for (const { key } of instr.args.filter((a) => a.key.includes("$"))) {
        warnings.push({
          code: "DOCKERFILE_ARG_NAME_VARIABLE",
          message: `ARG names are not expanded (BuildKit since dockerfile 1.8): this declares a variable named ${JSON.stringify(key)}`,
          line: range.startLine,
        });
      }
    }
    if (instr.kind === "maintainer") {
      warnings.push({
        code: "DOCKERFILE_MAINTAINER_DEPRECATED",
        message: "MAINTAINER instruction is deprecated in favor of using label",
        line: range.startLine,
      });
    }
    instructions.push(instr);
  }
  return { directives: parsed.directives, ast: parsed.ast, instructions, warnings, file, lines: parsed.lines };
}

function directiveLine(lines: string[], key: string): number | undefined {
  const re = new RegExp(`^\\s*#\\s*${key}\\s*=`, "i");
  const i = lines.findIndex((l) => re.test(l));
  return i < 0 ? undefined : i + 1;
}

/**
 * Parse the ONBUILD triggers a base image carries (its config's OnBuild list), as
 * BuildKit does when a stage starts from that image. Each trigger is parsed as a
 * one-instruction Dockerfile; ONBUILD, FROM and MAINTAINER are refused. Errors name
 * `file` (e.g. "base image alpine:3 ONBUILD") and the trigger's 1-based index as the line.
 */
export function parseOnbuildTriggers(triggers: readonly string[], opts: { file?: string } = {}): Instruction[] {
  const file = opts.file ?? "ONBUILD";
  const ctx = { file, lines: triggers.map((t) => t.split("\n")[0]!) };
  const out: Instruction[] = [];
  triggers.forEach((trigger, index) => {
    const line = index + 1;
    let children: Node[];
    try {
      children = parseAst(trigger, file).ast.children;
    } catch (e) {
      if (e instanceof OcibuildError) {
        const bare = e.message.startsWith(`${file}:`) ? e.message.slice(file.length + 1).replace(/^\d+:/, "").trimStart() : e.message;
        throw dockerfileError(e.code, bare, ctx, line, line, { cause: e, hint: e.hint });
      }
      throw e;
    }
    for (const child of children) {
      const kind = child.value.toLowerCase();
      if (kind === "onbuild" || kind === "from" || kind === "maintainer") {
        throw dockerfileError("DOCKERFILE_ONBUILD", `${kind.toUpperCase()} isn't allowed as an ONBUILD trigger`, ctx, line, line);
      }
      try {
        out.push(convertNode(child, { startLine: line, endLine: line }));
      } catch (e) {
        if (e instanceof LineParseError) throw dockerfileError(e.code, e.message, ctx, line, line, { hint: e.hint });
        throw e;
      }
    }
  });
  return out;
}
