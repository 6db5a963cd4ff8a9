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
const HEREDOC_INSTRUCTIONS: ReadonlySet<string> = new Set(["add", "copy", "run"]);

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

/** Go's bufio.Scanner stops at a line over 64 KiB; BuildKit reports it before anything else. */
function checkLineLengths(tokens: string[], ctx: SourceContext): void {
  for (let k = 0; k < tokens.length; k++) {
    if (tokens[k]!.length * 3 > MAX_LINE_BYTES && Buffer.byteLength(tokens[k]!, "utf8") > MAX_LINE_BYTES) {
      throw dockerfileError("DOCKERFILE_LINE_TOO_LONG", `dockerfile line greater than max allowed size of ${MAX_LINE_BYTES - 1}`, {
        ...ctx,
        lines: [],
      }, k + 1, k + 1, { hint: "split the line with continuation lines" });
    }
  }
}

/**
 * The parser's walk over the file's lines (BuildKit's Parse loop): directives, the
 * comments since the last instruction, and the warnings so far. `pos` counts the
 * lines read, so it is also the 1-based number of the last one.
 */
class AstReader {
  readonly directives = new DirectiveState();
  readonly warnings: ParseWarning[] = [];
  private comments: string[] = [];
  private pos = 0;

  constructor(
    private readonly tokens: string[],
    private readonly ctx: SourceContext,
  ) {}

  more(): boolean {
    return this.pos < this.tokens.length;
  }

  /** The next instruction with its line range and here-documents, or undefined for a line that holds none. */
  instruction(): Node | undefined {
    const raw = this.tokens[this.pos++]!;
    if (isComment(raw)) {
      const comment = trimSpace(raw.slice(1));
      if (comment === "") this.comments = [];
      else this.comments.push(comment);
    }
    const first = this.guard(() => this.processLine(raw, true), this.pos);
    if (first.directive) this.comments.pop();
    const startLine = this.pos;
    const { text, eol } = this.trimContinuation(first.text);
    if (eol && text.length === 0) return undefined;
    const line = eol ? text : this.joinContinued(text);
    const child = this.guard(() => dispatchLine(line, this.directives.escape, this.comments), startLine, this.pos);
    const trailing = jsonTrailingWarning(child, startLine);
    if (trailing) this.warnings.push(trailing);
    if (canContainHeredoc(child) && line.includes("<<")) {
      const docs = this.guard(() => heredocsFromLine(line), startLine, this.pos);
      for (const doc of docs) child.heredocs.push({ ...doc, content: this.heredocBody(doc, startLine) });
    }
    child.startLine = startLine;
    child.endLine = this.pos;
    this.comments = [];
    return child;
  }

  /** `first` and the lines that continue it, comments and empty lines inside the continuation skipped. */
  private joinContinued(first: string): string {
    let line = first;
    let eol = false;
    let hasEmptyContinuation = false;
    while (!eol && this.more()) {
      const raw = this.tokens[this.pos++]!;
      const processed = this.guard(() => this.processLine(raw, false), this.pos).text;
      if (isComment(raw)) continue;
      if (trimLeftSpace(trimNewline(processed)).length === 0) {
        hasEmptyContinuation = true;
        continue;
      }
      const part = this.trimContinuation(processed);
      line += part.text;
      eol = part.eol;
    }
    if (hasEmptyContinuation) {
      this.warnings.push({
        code: "DOCKERFILE_EMPTY_CONTINUATION",
        message: `Empty continuation line found in: ${line} (empty continuation lines will become errors in a future release)`,
        line: this.pos,
      });
    }
    return line;
  }

  /** The lines of a here-document up to its delimiter, which is consumed and not part of it. */
  private heredocBody(doc: Heredoc, startLine: number): string {
    let content = doc.content;
    while (this.more()) {
      const body = this.tokens[this.pos++]!;
      let candidate = trimNewline(body);
      if (doc.chomp) candidate = candidate.replace(/^\t+/, "");
      if (candidate === doc.name) return content;
      content += body;
    }
    throw dockerfileError("DOCKERFILE_HEREDOC", `unterminated heredoc <<${doc.name}`, this.ctx, startLine, this.pos, {
      hint: `end the here-document with a line containing only ${doc.name}`,
    });
  }

  private processLine(token: string, stripLeft: boolean): { text: string; directive: boolean } {
    let line = trimNewline(token);
    if (stripLeft) line = trimLeftSpace(line);
    const directive = this.directives.check(line);
    return { text: isComment(line) ? "" : line, directive };
  }

  private trimContinuation(line: string): { text: string; eol: boolean } {
    const re = this.directives.continuation;
    if (re.test(line)) return { text: line.replace(re, "$1"), eol: false };
    return { text: line, eol: true };
  }

  /** `f()`, its parse error turned into a Dockerfile error at lines start..end. */
  private guard<T>(f: () => T, start: number, end?: number): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof LineParseError) throw dockerfileError(e.code, e.message, this.ctx, start, end, { hint: e.hint });
      if (e instanceof OcibuildError) throw dockerfileError(e.code, e.message, this.ctx, start, end, { cause: e });
      throw e;
    }
  }
}

export function parseAst(input: string, file = "Dockerfile"): AstResult {
  const text = input.startsWith("\ufeff") ? input.slice(1) : input;
  const tokens = scanLines(text);
  const ctx: SourceContext = { file, lines: tokens.map(trimNewline) };
  checkLineLengths(tokens, ctx);
  const reader = new AstReader(tokens, ctx);
  const root = newNode("", { startLine: -1 });
  while (reader.more()) {
    const child = reader.instruction();
    if (child === undefined) continue;
    if (root.startLine < 0) root.startLine = child.startLine;
    root.endLine = child.endLine;
    root.children.push(child);
  }
  if (root.startLine < 0) {
    throw dockerfileError("DOCKERFILE_EMPTY", "file with no instructions", ctx, undefined, undefined, {
      hint: "a Dockerfile needs at least a FROM instruction",
    });
  }
  return { directives: { ...reader.directives.values }, ast: root, warnings: reader.warnings, file, lines: ctx.lines };
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
