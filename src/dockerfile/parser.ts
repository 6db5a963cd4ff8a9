/**
 * Dockerfile text -> BuildKit-shaped AST: parser directives, the escape token,
 * line continuations (with comments and empty lines inside them), heredocs,
 * and per-instruction argument parsing (line-parsers.ts). Mirrors BuildKit's
 * frontend/dockerfile/parser so that dumps are byte-identical.
 */
import type { Heredoc } from "./instructions.js";
import { type Node, newNode } from "./ast.js";
import { type ParseWarning, type SourceContext, dockerfileError } from "./diagnostics.js";
import { LineParseError, dispatchLine } from "./line-parsers.js";
import { runLexer } from "./shell-words.js";
import { trimLeftSpace, trimSpace } from "./text.js";
import { OcibuildError } from "../errors.js";

export interface Directives {
  /** `# syntax=` value, as written. */
  syntax?: string;
  /** `# escape=`: the escape and line-continuation character. */
  escape: "\\" | "`";
  /** `# check=` value, as written. */
  check?: string;
}

export interface AstResult {
  directives: Directives;
  ast: Node;
  warnings: ParseWarning[];
  file: string;
  /** The file's lines without terminators (BOM removed), for error snippets. */
  lines: string[];
}

const DIRECTIVE_KEY_RE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=/;
const GO_SPACE = /[\t\n\f\r ]/;
/** Go's bufio.Scanner default limit: a line (with its newline) must fit in 64 KiB. */
const MAX_LINE_BYTES = 64 * 1024;

/**
 * BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` without backtracking (a JS
 * RegExp is quadratic on long runs of spaces): [key, value] or undefined.
 */
function matchDirective(line: string): [string, string] | undefined {
  const m = DIRECTIVE_KEY_RE.exec(line);
  if (m === null || line.includes("\n")) return undefined;
  let i = m[0].length;
  while (i < line.length && GO_SPACE.test(line[i]!)) i++;
  if (i === line.length) {
    // all blank after '=': `\s*` gives one character back to `(.+?)`
    return i > m[0].length ? [m[1]!, line[i - 1]!] : undefined;
  }
  let end = line.length;
  while (end > i && GO_SPACE.test(line[end - 1]!)) end--;
  return [m[1]!, line.slice(i, end)];
}
const HEREDOC_RE = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;
const HEREDOC_INSTRUCTIONS = new Set(["add", "copy", "run"]);

/** Parser directives state (BuildKit's DirectiveParser + escape token). */
class DirectiveState {
  done = false;
  seen = new Set<string>();
  escape: "\\" | "`" = "\\";
  continuation = continuationRegex("\\");
  values: Directives = { escape: "\\" };

  /** Looks at a line while directives are still allowed; returns whether it was one. */
  check(line: string): boolean {
    if (this.done) return false;
    if (!line.startsWith("#")) {
      this.done = true;
      return false;
    }
    const m = matchDirective(trimLeftSpace(line.slice(1)));
    if (m === undefined) {
      this.done = true;
      return false;
    }
    const key = m[0].toLowerCase();
    if (key !== "syntax" && key !== "escape" && key !== "check") {
      this.done = true;
      return false;
    }
    if (this.seen.has(key)) throw new LineParseError("DOCKERFILE_DIRECTIVE", `only one ${key} parser directive can be used`);
    this.seen.add(key);
    const value = m[1];
    if (key === "escape") {
      if (value !== "`" && value !== "\\") {
        throw new LineParseError("DOCKERFILE_DIRECTIVE", `invalid escape token '${value}' does not match \` or \\`, {
          hint: "use '# escape=\\' or '# escape=`'",
        });
      }
      this.escape = value;
      this.continuation = continuationRegex(value);
      this.values.escape = value;
    } else {
      this.values[key] = value;
    }
    return true;
  }
}

function continuationRegex(token: string): RegExp {
  const t = token === "\\" ? "\\\\" : token;
  return new RegExp(`([^${t}])${t}[ \\t]*$|^${t}[ \\t]*$`, "u");
}

/** Go's bufio scan with line endings preserved: every piece ends in \n except maybe the last. */
function scanLines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const nl = text.indexOf("\n", start);
    if (nl < 0) break;
    out.push(text.slice(start, nl + 1));
    start = nl + 1;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

function trimNewline(s: string): string {
  return s.replace(/[\r\n]+$/, "");
}

function isComment(line: string): boolean {
  return trimLeftSpace(line).startsWith("#");
}

export function parseAst(input: string, file = "Dockerfile"): AstResult {
  const text = input.startsWith("\ufeff") ? input.slice(1) : input;
  const tokens = scanLines(text);
  const ctx: SourceContext = { file, lines: tokens.map(trimNewline) };
  const d = new DirectiveState();
  const warnings: ParseWarning[] = [];
  const root = newNode("", { startLine: -1 });
  let comments: string[] = [];
  let currentLine = 0;
  let i = 0;

  const fail = (e: unknown, start: number, end?: number): never => {
    if (e instanceof LineParseError) throw dockerfileError(e.code, e.message, ctx, start, end, { hint: e.hint });
    if (e instanceof OcibuildError) throw dockerfileError(e.code, e.message, ctx, start, end, { cause: e });
    throw e;
  };

  const processLine = (token: string, stripLeft: boolean): { text: string; directive: boolean } => {
    let line = trimNewline(token);
    if (stripLeft) line = trimLeftSpace(line);
    const directive = d.check(line);
    return { text: isComment(line) ? "" : line, directive };
  };

  const trimContinuation = (line: string): { text: string; eol: boolean } => {
    if (d.continuation.test(line)) return { text: line.replace(d.continuation, "$1"), eol: false };
    return { text: line, eol: true };
  };

  for (let k = 0; k < tokens.length; k++) {
    if (tokens[k]!.length * 3 > MAX_LINE_BYTES && Buffer.byteLength(tokens[k]!, "utf8") > MAX_LINE_BYTES) {
      throw dockerfileError("DOCKERFILE_LINE_TOO_LONG", `dockerfile line greater than max allowed size of ${MAX_LINE_BYTES - 1}`, {
        ...ctx,
        lines: [],
      }, k + 1, k + 1, { hint: "split the line with continuation lines" });
    }
  }

  while (i < tokens.length) {
    const raw = tokens[i++]!;
    if (isComment(raw)) {
      const comment = trimSpace(raw.slice(1));
      if (comment === "") comments = [];
      else comments.push(comment);
    }
    let first: { text: string; directive: boolean };
    try {
      first = processLine(raw, true);
    } catch (e) {
      fail(e, currentLine + 1);
    }
    if (first!.directive) comments.pop();
    currentLine++;
    const startLine = currentLine;
    let { text: part, eol } = trimContinuation(first!.text);
    if (eol && part.length === 0) continue;
    let line = part;
    let hasEmptyContinuation = false;
    while (!eol && i < tokens.length) {
      const rawNext = tokens[i++]!;
      let processed: string;
      try {
        processed = processLine(rawNext, false).text;
      } catch (e) {
        fail(e, currentLine + 1);
      }
      currentLine++;
      if (isComment(rawNext)) continue;
      if (trimLeftSpace(trimNewline(processed!)).length === 0) {
        hasEmptyContinuation = true;
        continue;
      }
      ({ text: part, eol } = trimContinuation(processed!));
      line += part;
    }

    if (hasEmptyContinuation) {
      warnings.push({
        code: "DOCKERFILE_EMPTY_CONTINUATION",
        message: `Empty continuation line found in: ${line} (empty continuation lines will become errors in a future release)`,
        line: currentLine,
      });
    }

    let child: Node;
    try {
      child = dispatchLine(line, d.escape, comments);
    } catch (e) {
      fail(e, startLine, currentLine);
    }

    const trailing = jsonTrailingWarning(child!, startLine);
    if (trailing) warnings.push(trailing);

    if (canContainHeredoc(child!) && line.includes("<<")) {
      let docs: Heredoc[];
      try {
        docs = heredocsFromLine(line);
      } catch (e) {
        fail(e, startLine, currentLine);
      }
      for (const doc of docs!) {
        let terminated = false;
        let content = doc.content;
        while (i < tokens.length) {
          const body = tokens[i++]!;
          currentLine++;
          let candidate = trimNewline(body);
          if (doc.chomp) candidate = candidate.replace(/^\t+/, "");
          if (candidate === doc.name) {
            terminated = true;
            break;
          }
          content += body;
        }
        if (!terminated) {
          throw dockerfileError("DOCKERFILE_HEREDOC", `unterminated heredoc <<${doc.name}`, ctx, startLine, currentLine, {
            hint: `end the here-document with a line containing only ${doc.name}`,
          });
        }
        child!.heredocs.push({ ...doc, content });
      }
    }

    child!.startLine = startLine;
    child!.endLine = currentLine;
    if (root.startLine < 0) root.startLine = startLine;
    root.endLine = currentLine;
    root.children.push(child!);
    comments = [];
  }

  if (root.startLine < 0) {
    throw dockerfileError("DOCKERFILE_EMPTY", "file with no instructions", ctx, undefined, undefined, {
      hint: "a Dockerfile needs at least a FROM instruction",
    });
  }
  return { directives: { ...d.values }, ast: root, warnings, file, lines: ctx.lines };
}

/**
 * `ENTRYPOINT ["x"] # note` is not JSON form (BuildKit reads the whole text as one
 * JSON value or not at all), which is rarely what was meant: say so. SHELL, which
 * needs JSON form, fails on its own.
 */
function jsonTrailingWarning(node: Node, line: number): ParseWarning | undefined {
  let n = node;
  if (n.value.toLowerCase() === "onbuild" && n.next !== undefined && n.next.children.length > 0) n = n.next.children[0]!;
  const trailing = n.attributes.jsonTrailing;
  if (trailing === undefined || n.value.toLowerCase() === "shell") return undefined;
  const words = ["copy", "add", "volume"].includes(n.value.toLowerCase());
  const form = words ? "words split at spaces" : "a shell command";
  const fix = trailing.startsWith("#") ? "a # comment must be on a line of its own" : words ? "put every argument inside the array" : "end the line with the closing ]";
  return {
    code: "DOCKERFILE_JSON_TRAILING",
    message: `${n.value.toUpperCase()} is not in JSON form: text follows its JSON array (${JSON.stringify(trailing)}), so the whole line is read as ${form}, as BuildKit does; ${fix}`,
    line,
  };
}

function canContainHeredoc(node: Node): boolean {
  let n = node;
  if (n.value.toLowerCase() === "onbuild" && n.next !== undefined && n.next.children.length > 0) n = n.next.children[0]!;
  return HEREDOC_INSTRUCTIONS.has(n.value.toLowerCase()) && n.attributes.json !== true;
}

/** BuildKit's ParseHeredoc: `<<EOF`, `<<-EOF`, `3<<"EOF"` -> a heredoc, or undefined if `src` is not one. */
export function parseHeredocWord(src: string): Heredoc | undefined {
  const m = HEREDOC_RE.exec(src);
  if (m === null) return undefined;
  const chomp = m[2] === "-";
  const rest = m[3]!;
  if (rest.length === 0) return undefined;
  const words = runLexer(rest, {}, { escapeToken: "\\", skipUnsetEnv: true }).words;
  if (words.length !== 1) return undefined;
  const rawWords = runLexer(rest, {}, { escapeToken: "\\", skipUnsetEnv: true, rawQuotes: true }).words;
  if (rawWords.length !== words.length) {
    throw new LineParseError("DOCKERFILE_HEREDOC", `internal lexing of heredoc produced inconsistent results: ${rest}`);
  }
  const quotes = (s: string) => (s.match(/['"]/g) ?? []).length;
  const word = words[0]!;
  return { name: word, content: "", expand: quotes(word) === quotes(rawWords[0]!), chomp };
}

function heredocsFromLine(line: string): Heredoc[] {
  let words: string[];
  try {
    words = runLexer(line, {}, { escapeToken: "\\", rawQuotes: true, rawEscapes: true, skipUnsetEnv: true }).words;
  } catch {
    words = [];
  }
  const docs: Heredoc[] = [];
  for (const w of words) {
    const doc = parseHeredocWord(w);
    if (doc !== undefined) docs.push(doc);
  }
  return docs;
}

/** Strip leading tabs from every line (`<<-`). */
export function chompHeredoc(content: string): string {
  // Go's (?m)^ is after \n only; JS's m flag would also break lines at \r.
  return content.replace(/(^|\n)\t+/g, "$1");
}
