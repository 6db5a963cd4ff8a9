/**
 * Per-instruction argument parsing of one (continuation-joined) line into AST
 * nodes, as BuildKit's line parsers do: flags first, then JSON arrays, name/value
 * pairs, whitespace lists or the raw string depending on the instruction.
 */
import type { ErrorCode } from "../errors.js";
import { type Node, newNode } from "./ast.js";
import {
  fromByteString,
  replaceLoneSurrogates,
  isSpace,
  splitWhitespace2,
  splitWhitespaceAll,
  toByteString,
  trimLeftSpace,
  trimSpace,
} from "./text.js";

/** A parse failure without a location yet (the caller adds file and line). */
export class LineParseError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: { hint?: string } = {},
  ) {
    super(message);
  }
  get hint(): string | undefined {
    return this.extra.hint;
  }
}

/** What a line parser makes of the arguments; `trailing`: text after a JSON array that made it plain form. */
interface Parsed {
  next?: Node;
  json?: boolean;
  trailing?: string;
}

type LineParser = (rest: string, escape: string) => Parsed;

const DISPATCH: Record<string, LineParser> = {
  add: parseMaybeJSONToList,
  arg: parseNameOrNameVal,
  cmd: parseMaybeJSON,
  copy: parseMaybeJSONToList,
  entrypoint: parseMaybeJSON,
  env: (rest, esc) => ({ next: parseNameVal(rest, "ENV", esc) }),
  expose: parseStringsWhitespaceDelimited,
  from: parseStringsWhitespaceDelimited,
  healthcheck: parseHealthConfig,
  label: (rest, esc) => ({ next: parseNameVal(rest, "LABEL", esc) }),
  maintainer: parseString,
  onbuild: parseSubCommand,
  run: parseMaybeJSON,
  shell: parseMaybeJSON,
  stopsignal: parseString,
  user: parseString,
  volume: parseMaybeJSONToList,
  workdir: parseString,
};

/** One instruction line -> its node (name, flags, arguments). Unknown instructions get an empty argument node. */
export function dispatchLine(line: string, escape: string, comments: string[] = []): Node {
  const { cmd, flags, args } = splitCommand(line, escape);
  const fn = Object.hasOwn(DISPATCH, cmd.toLowerCase()) ? DISPATCH[cmd.toLowerCase()]! : parseIgnore;
  const { next, json, trailing }: Parsed = fn(args, escape);
  return newNode(cmd, {
    original: line,
    flags,
    next,
    attributes: { ...(json ? { json: true } : {}), ...(trailing !== undefined ? { jsonTrailing: trailing } : {}) },
    prevComment: [...comments],
  });
}

function parseIgnore(): { next?: Node } {
  return { next: newNode("") };
}

function parseSubCommand(rest: string, escape: string): { next?: Node } {
  if (rest === "") return {};
  const child = dispatchLine(rest, escape);
  return { next: newNode("", { children: [child] }) };
}

function splitCommand(line: string, escape: string): { cmd: string; flags: string[]; args: string } {
  const parts = splitWhitespace2(trimSpace(line));
  let args = "";
  let flags: string[] = [];
  if (parts.length === 2) ({ rest: args, flags } = extractBuilderFlags(parts[1]!, escape));
  return { cmd: parts[0]!, flags, args: trimSpace(args) };
}

/**
 * Leading `--flag[=value]` words (quotes and escapes processed), up to `--` or
 * the first word not starting with `--`. Works on UTF-8 bytes like BuildKit.
 */
function extractBuilderFlags(input: string, escape: string): { rest: string; flags: string[] } {
  const line = toByteString(input);
  const words: string[] = [];
  let phase: "spaces" | "word" | "quote" = "spaces";
  let buf = "";
  let quote = "";
  let blankOK = false;
  let ch = "";
  for (let pos = 0; pos <= line.length; pos++) {
    if (pos !== line.length) ch = line[pos]!;
    if (phase === "spaces") {
      if (pos === line.length) break;
      if (isSpace(ch)) continue;
      if (ch !== "-" || pos + 1 === line.length || line[pos + 1] !== "-") {
        return { rest: fromByteString(line.slice(pos)), flags: words };
      }
      phase = "word";
    }
    if (pos === line.length) {
      if (buf !== "--" && (blankOK || buf.length > 0)) words.push(buf);
      break;
    }
    if (phase === "word") {
      if (isSpace(ch)) {
        phase = "spaces";
        if (buf === "--") return { rest: fromByteString(line.slice(pos)), flags: words };
        if (blankOK || buf.length > 0) words.push(buf);
        buf = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = "quote";
        continue;
      }
      if (ch === escape) {
        if (pos + 1 === line.length) continue;
        pos++;
        ch = line[pos]!;
      }
      buf += ch;
      continue;
    }
    // in quotes
    if (ch === quote) {
      phase = "word";
      continue;
    }
    if (ch === escape) {
      if (pos + 1 === line.length) {
        phase = "word";
        continue;
      }
      pos++;
      ch = line[pos]!;
    }
    buf += ch;
  }
  return { rest: "", flags: words };
}

/** Space-separated words, quotes and escapes kept (they are removed later, at expansion). */
export function parseWords(rest: string, escape: string): string[] {
  const chars = Array.from(rest);
  const words: string[] = [];
  let phase: "spaces" | "word" | "quote" = "spaces";
  let quote = "";
  let blankOK = false;
  let buf = "";
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = pos < chars.length ? chars[pos]! : "";
    if (phase === "spaces") {
      if (pos === chars.length) break;
      if (isSpace(ch)) continue;
      phase = "word";
    }
    if (pos === chars.length) {
      if (blankOK || buf.length > 0) words.push(buf);
      break;
    }
    if (phase === "word") {
      if (isSpace(ch)) {
        phase = "spaces";
        if (blankOK || buf.length > 0) words.push(buf);
        buf = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = "quote";
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        buf += ch;
        pos++;
        ch = chars[pos]!;
      }
      buf += ch;
      continue;
    }
    if (ch === quote) phase = "word";
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = "word";
        continue;
      }
      pos++;
      buf += ch;
      ch = chars[pos]!;
    }
    buf += ch;
  }
  return words;
}

function keyValueNode(key: string, value: string, sep: string): Node {
  return newNode(key, { next: newNode(value, { next: newNode(sep) }) });
}

/** ENV/LABEL: `name=value ...` or the legacy `name value`; triples (key, value, "=" or ""). */
function parseNameVal(rest: string, instruction: string, escape: string): Node | undefined {
  const words = parseWords(rest, escape);
  if (words.length === 0) return undefined;
  if (!words[0]!.includes("=")) {
    const parts = splitWhitespace2(rest);
    if (parts.length < 2) {
      throw new LineParseError("DOCKERFILE_ARGUMENTS", `${instruction} must have two arguments`, {
        hint: `use ${instruction} name=value`,
      });
    }
    return keyValueNode(parts[0]!, parts[1]!, "");
  }
  let root: Node | undefined;
  let tail: Node | undefined;
  for (const word of words) {
    const eq = word.indexOf("=");
    if (eq < 0) {
      throw new LineParseError(
        "DOCKERFILE_SYNTAX",
        `Syntax error - can't find = in ${JSON.stringify(word)}. Must be of the form: name=value`,
        { hint: "quote values that contain spaces: name=\"a b\"" },
      );
    }
    const node = keyValueNode(word.slice(0, eq), word.slice(eq + 1), "=");
    if (root === undefined) root = node;
    if (tail !== undefined) tail.next = node;
    tail = node.next!.next!;
  }
  return root;
}

/** ARG: each word as an argument (`name` or `name=value`). */
function parseNameOrNameVal(rest: string, escape: string): { next?: Node } {
  return { next: chain(parseWords(rest, escape)) };
}

function chain(values: string[]): Node | undefined {
  let root: Node | undefined;
  for (let i = values.length - 1; i >= 0; i--) root = newNode(values[i]!, { next: root });
  return root;
}

function parseStringsWhitespaceDelimited(rest: string): { next?: Node } {
  if (rest === "") return {};
  return { next: chain(splitWhitespaceAll(rest)) };
}

function parseString(rest: string): { next?: Node } {
  if (rest === "") return {};
  return { next: newNode(rest) };
}

/** Not a JSON array; `trailing` when a JSON array of strings opens the text and more text follows it. */
class NotJSON extends Error {
  constructor(readonly trailing?: string) {
    super("not a JSON array");
  }
}

/**
 * Like BuildKit (json.Unmarshal, since dockerfile 1.9), the whole text must be one
 * JSON array: `["a"] # note` is not JSON form but plain text (shell form for
 * RUN/CMD/ENTRYPOINT, words for COPY/ADD/VOLUME).
 */
function parseJSON(input: string): { next?: Node; json: true } {
  const rest = trimLeftSpace(input);
  if (!rest.startsWith("[")) throw new NotJSON();
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    throw new NotJSON(trailingAfterArray(rest));
  }
  if (!Array.isArray(parsed)) throw new NotJSON();
  const values: string[] = [];
  for (const v of parsed) {
    if (typeof v !== "string") {
      throw new LineParseError("DOCKERFILE_JSON", "when using JSON array syntax, arrays must be comprised of strings only", {
        hint: 'write every element as a string: ["a", "b"]',
      });
    }
    values.push(replaceLoneSurrogates(v));
  }
  return { next: chain(values), json: true };
}

/** The text after a JSON array of strings that opens `s`, when there is any (one linear scan). */
function trailingAfterArray(s: string): string | undefined {
  const ws = (k: number) => {
    while (k < s.length && (s[k] === " " || s[k] === "\t" || s[k] === "\n" || s[k] === "\r")) k++;
    return k;
  };
  let i = ws(1);
  if (s[i] !== "]") {
    for (;;) {
      if (s[i] !== '"') return undefined;
      for (i++; i < s.length && s[i] !== '"'; i++) if (s[i] === "\\") i++;
      if (i >= s.length) return undefined;
      i = ws(i + 1);
      if (s[i] === "]") break;
      if (s[i] !== ",") return undefined;
      i = ws(i + 1);
    }
  }
  try {
    JSON.parse(s.slice(0, i + 1));
  } catch {
    return undefined;
  }
  const rest = trimSpace(s.slice(i + 1));
  return rest === "" ? undefined : rest;
}

/** Whether `s` can be JSON form at all (parseJSON's first test, without the cost of throwing). */
function mayBeJSON(s: string): boolean {
  return trimLeftSpace(s).startsWith("[");
}

function parseMaybeJSON(rest: string): Parsed {
  if (rest === "") return {};
  if (!mayBeJSON(rest)) return { next: newNode(rest) };
  try {
    return parseJSON(rest);
  } catch (e) {
    if (!(e instanceof NotJSON)) throw e;
    return { next: newNode(rest), ...(e.trailing !== undefined ? { trailing: e.trailing } : {}) };
  }
}

function parseMaybeJSONToList(rest: string): Parsed {
  if (!mayBeJSON(rest)) return parseStringsWhitespaceDelimited(rest);
  try {
    return parseJSON(rest);
  } catch (e) {
    if (!(e instanceof NotJSON)) throw e;
    return { ...parseStringsWhitespaceDelimited(rest), ...(e.trailing !== undefined ? { trailing: e.trailing } : {}) };
  }
}

/** HEALTHCHECK: the type word (CMD/NONE), then the command like CMD's. */
function parseHealthConfig(input: string): Parsed {
  const rest = toByteString(input);
  let sep = 0;
  while (sep < rest.length && !isSpace(rest[sep]!)) sep++;
  let next = sep;
  while (next < rest.length && isSpace(rest[next]!)) next++;
  if (sep === 0) return {};
  const typ = fromByteString(rest.slice(0, sep));
  const cmd = parseMaybeJSON(fromByteString(rest.slice(next)));
  return { ...cmd, next: newNode(typ, { next: cmd.next }) };
}
