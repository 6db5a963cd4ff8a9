/**
 * Variable expansion and word splitting with BuildKit's semantics
 * (frontend/dockerfile/shell): quotes, escapes, $VAR, ${VAR}, and the
 * ${VAR:-x} ${VAR-x} ${VAR:+x} ${VAR+x} ${VAR:?m} ${VAR?m} ${VAR#p} ${VAR##p}
 * ${VAR%p} ${VAR%%p} ${VAR/p/r} ${VAR//p/r} modifiers. Pure: the environment is
 * passed in, never read from the process.
 */
import { OcibuildError } from "../errors.js";
import { PatternError, replacePattern, trimPrefix, trimSuffix } from "./shell-pattern.js";
import { escapedByte, isSpace } from "./text.js";

export interface ExpandOptions {
  /** Escape character of the Dockerfile (`# escape=`); default backslash. */
  escapeToken?: "\\" | "`";
  /** Called with each variable name that was looked up and found. */
  onUsed?: (name: string) => void;
  /** Called with each variable name that was looked up and not set. */
  onUnset?: (name: string) => void;
}

/** Lexer switches BuildKit uses internally (heredoc detection, raw modes). */
export interface LexModes {
  escapeToken: string;
  /** Keep quote characters in the output. */
  rawQuotes?: boolean;
  /** Keep escape characters in the output. */
  rawEscapes?: boolean;
  /** Leave references to unset variables as written. */
  skipUnsetEnv?: boolean;
  /** Treat quotes as ordinary characters (heredoc bodies). */
  skipProcessQuotes?: boolean;
  onUsed?: (name: string) => void;
  onUnset?: (name: string) => void;
}

/** Raised inside the lexer; converted to an OcibuildError at the API edge. */
class LexError extends Error {}

const EOF = -1;

/** Single-word expansion (BuildKit's ProcessWord): quotes removed, spaces kept. */
export function expandWord(word: string, env: Record<string, string>, options: ExpandOptions = {}): string {
  return runLexer(word, env, modesFrom(options)).result;
}

/** Expansion then word splitting (BuildKit's ProcessWords): unquoted whitespace separates words. */
export function expandWords(word: string, env: Record<string, string>, options: ExpandOptions = {}): string[] {
  return runLexer(word, env, modesFrom(options)).words;
}

function modesFrom(options: ExpandOptions): LexModes {
  return { escapeToken: options.escapeToken ?? "\\", onUsed: options.onUsed, onUnset: options.onUnset };
}

/** Run the lexer with explicit modes; throws OcibuildError DOCKERFILE_EXPANSION. */
export function runLexer(word: string, env: Record<string, string>, modes: LexModes): { result: string; words: string[] } {
  const lexer = new Lexer(word, env, modes);
  try {
    return lexer.run();
  } catch (e) {
    if (e instanceof LexError) {
      throw new OcibuildError("DOCKERFILE_EXPANSION", `failed to process ${JSON.stringify(word)}: ${e.message}`, {
        details: { word },
      });
    }
    throw e;
  }
}

/** Collects output words; unquoted whitespace from plain text or variables separates them. */
class Words {
  words: string[] = [];
  buf = "";
  inWord = false;

  addChar(ch: string): void {
    if (isSpace(ch)) {
      if (this.inWord && this.buf.length > 0) {
        this.words.push(this.buf);
        this.buf = "";
        this.inWord = false;
      }
    } else {
      this.addRawChar(ch);
    }
  }

  addRawChar(ch: string): void {
    this.buf += ch;
    this.inWord = true;
  }

  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }

  addRawString(s: string): void {
    this.buf += s;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.buf.length > 0) {
      this.words.push(this.buf);
      this.buf = "";
      this.inWord = false;
    }
    return this.words;
  }
}

class Lexer {
  private readonly chars: string[];
  private pos = 0;
  private rawEscapes: boolean;

  constructor(
    word: string,
    private readonly env: Record<string, string>,
    private readonly modes: LexModes,
  ) {
    // Go's text/scanner reads each invalid UTF-8 byte as U+FFFD
    this.chars = Array.from(word, (c) => (escapedByte(c) !== undefined ? "\ufffd" : c));
    // Go's text/scanner drops a byte-order mark at the very start.
    if (this.chars[0] === "\ufeff") this.pos = 1;
    this.rawEscapes = modes.rawEscapes ?? false;
  }

  run(): { result: string; words: string[] } {
    const { result, words } = this.processStopOn(undefined, this.rawEscapes);
    return { result, words };
  }

  private peek(): string | typeof EOF {
    return this.pos < this.chars.length ? this.chars[this.pos]! : EOF;
  }

  private next(): string | typeof EOF {
    return this.pos < this.chars.length ? this.chars[this.pos++]! : EOF;
  }

  private processStopOn(stopChar: string | undefined, rawEscapes: boolean): { result: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = "";
      const words = new Words();
      while (this.peek() !== EOF) {
        const ch = this.peek() as string;
        if (stopChar !== undefined && ch === stopChar) {
          this.next();
          return { result, words: words.finish() };
        }
        const quote = (ch === "'" || ch === '"') && !this.modes.skipProcessQuotes;
        if (ch === "$" || ch === "<" || quote) {
          const tmp =
            ch === "$"
              ? this.processDollar()
              : ch === "<"
                ? this.processPossibleHeredoc()
                : ch === "'"
                  ? this.processSingleQuote()
                  : this.processDoubleQuote();
          result += tmp;
          if (ch === "$") words.addString(tmp);
          else words.addRawString(tmp);
          continue;
        }
        let c = this.next() as string | typeof EOF;
        if (c === this.modes.escapeToken) {
          if (this.rawEscapes) {
            words.addRawChar(c);
            result += c;
          }
          c = this.next();
          if (c === EOF) break;
          words.addRawChar(c);
        } else {
          words.addChar(c as string);
        }
        result += c;
      }
      if (stopChar !== undefined) {
        throw new LexError(`unexpected end of statement while looking for matching ${stopChar}`);
      }
      return { result, words: words.finish() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private processSingleQuote(): string {
    let result = "";
    const open = this.next() as string;
    if (this.modes.rawQuotes) result += open;
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new LexError("unexpected end of statement while looking for matching single-quote");
      if (ch === "'") {
        if (this.modes.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    let result = "";
    const open = this.next() as string;
    if (this.modes.rawQuotes) result += open;
    for (;;) {
      const p = this.peek();
      if (p === EOF) throw new LexError("unexpected end of statement while looking for matching double-quote");
      if (p === '"') {
        this.next();
        if (this.modes.rawQuotes) result += p;
        return result;
      }
      if (p === "$") {
        result += this.processDollar();
        continue;
      }
      let ch = this.next() as string;
      if (ch === this.modes.escapeToken) {
        if (this.rawEscapes) result += ch;
        const after = this.peek();
        if (after === EOF) continue;
        if (after === '"' || after === "$" || after === this.modes.escapeToken) ch = this.next() as string;
      }
      result += ch;
    }
  }

  private processPossibleHeredoc(): string {
    this.next();
    if (this.peek() !== "<") return "<";
    this.next();
    let space = "";
    for (let p = this.peek(); p === "\t" || p === "\r" || p === " "; p = this.peek()) {
      space += p;
      this.next();
    }
    return `<<${space}`;
  }

  private lookup(name: string): string | undefined {
    if (Object.hasOwn(this.env, name)) {
      this.modes.onUsed?.(name);
      return this.env[name];
    }
    this.modes.onUnset?.(name);
    return undefined;
  }

  private processDollar(): string {
    this.next();
    if (this.peek() !== "{") {
      const name = this.processName();
      if (name === "") return "$";
      const value = this.lookup(name);
      if (value === undefined && this.modes.skipUnsetEnv) return `$${name}`;
      return value ?? "";
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new LexError("syntax error: missing '}'");
    if (first === "{" || first === "}" || first === ":") throw new LexError("syntax error: bad substitution");
    const name = this.processName();
    let ch = this.next();
    let chs = ch === EOF ? "\ufffd" : ch;
    let nullIsUnset = false;

    if (ch === "}") {
      const value = this.lookup(name);
      if (value === undefined && this.modes.skipUnsetEnv) return `\${${name}}`;
      return value ?? "";
    }
    if (ch === "/") return this.processReplace(name);
    if (ch === ":") {
      nullIsUnset = true;
      ch = this.next();
      chs += ch === EOF ? "\ufffd" : ch;
    } else if (!(ch === "+" || ch === "-" || ch === "?" || ch === "#" || ch === "%")) {
      throw new LexError(`unsupported modifier (${chs}) in substitution`);
    }
    const raw = ch === "#" || ch === "%";
    if (nullIsUnset && raw) throw new LexError(`unsupported modifier (${chs}) in substitution`);
    let word: string;
    try {
      word = this.processStopOn("}", raw).result;
    } catch (e) {
      if (e instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '}'");
      throw e;
    }
    const value = this.lookup(name);
    if (value === undefined && this.modes.skipUnsetEnv) return `\${${name}${chs}${word}}`;
    const set = value !== undefined;
    const val = value ?? "";
    switch (ch) {
      case "-":
        return !set || (nullIsUnset && val === "") ? word : val;
      case "+":
        return !set || (nullIsUnset && val === "") ? "" : word;
      case "?":
        if (!set) throw new LexError(`${name}: ${word !== "" ? word : "is not allowed to be unset"}`);
        if (nullIsUnset && val === "") throw new LexError(`${name}: ${word !== "" ? word : "is not allowed to be empty"}`);
        return val;
      case "%":
      case "#": {
        let pattern = word;
        let greedy = false;
        if (pattern.length > 0 && pattern[0] === ch) {
          greedy = true;
          pattern = pattern.slice(1);
        }
        return patternOp(() => (ch === "%" ? trimSuffix(pattern, val, greedy) : trimPrefix(pattern, val, greedy)));
      }
      default:
        throw new LexError(`unsupported modifier (${chs}) in substitution`);
    }
  }

  private processReplace(name: string): string {
    const replaceAll = this.peek() === "/";
    if (replaceAll) this.next();
    let pattern: string;
    try {
      pattern = this.processStopOn("/", true).result;
    } catch (e) {
      if (e instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '/' in ${}");
      throw e;
    }
    let replacement: string;
    try {
      replacement = this.processStopOn("}", true).result;
    } catch (e) {
      if (e instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '}'");
      throw e;
    }
    const value = this.lookup(name);
    if (value === undefined && this.modes.skipUnsetEnv) return `\${${name}/${pattern}/${replacement}}`;
    return patternOp(() => replacePattern(pattern, value ?? "", replacement, replaceAll));
  }

  private processName(): string {
    let name = "";
    while (this.peek() !== EOF) {
      const ch = this.peek() as string;
      if (name.length === 0 && isDigit(ch)) {
        while (this.peek() !== EOF && isDigit(this.peek() as string)) name += this.next() as string;
        return name;
      }
      if (name.length === 0 && isSpecialParam(ch)) return this.next() as string;
      if (!isLetter(ch) && !isDigit(ch) && ch !== "_") break;
      name += this.next() as string;
    }
    return name;
  }
}

// ASCII first: the Unicode property classes cost ~0.4 ms each to compile at first use.
function isDigit(ch: string): boolean {
  if (ch < "\x80") return ch >= "0" && ch <= "9";
  return /^\p{Nd}$/u.test(ch);
}

function isLetter(ch: string): boolean {
  if (ch < "\x80") return (ch >= "a" && ch <= "z") || (ch >= "A" && ch <= "Z");
  return /^\p{L}$/u.test(ch);
}

function isSpecialParam(ch: string): boolean {
  return "@*#?-$!0".includes(ch);
}

function patternOp(fn: () => string): string {
  try {
    return fn();
  } catch (e) {
    if (e instanceof PatternError) throw new LexError(e.message);
    throw e;
  }
}
