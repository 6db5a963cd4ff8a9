/**
 * The parse tree, shaped like BuildKit's parser.Node, and its `Dump()` format
 * (the golden `result` files of BuildKit's parser tests).
 */
import type { Heredoc } from "./instructions.js";

export interface Node {
  /** Instruction name (lower-case) for instruction nodes; an argument's text otherwise; "" for the root. */
  value: string;
  /** Next argument in this instruction's list. */
  next?: Node;
  /** Root: one child per instruction. ONBUILD's argument node: the nested instruction. */
  children: Node[];
  /** Here-documents attached to this instruction. */
  heredocs: Heredoc[];
  /**
   * `json: true` when the arguments came from a JSON array; `jsonTrailing`: the text
   * after a JSON array that made the arguments plain form instead (not in the dump).
   */
  attributes: { json?: boolean; jsonTrailing?: string };
  /** The instruction's text as written, continuations joined. */
  original: string;
  /** Flags (`--from=x`) as written, before the arguments. */
  flags: string[];
  startLine: number;
  endLine: number;
  /** Comment lines directly above the instruction (without `#`). */
  prevComment: string[];
}

export function newNode(value: string, init: Partial<Node> = {}): Node {
  return {
    value,
    children: [],
    heredocs: [],
    attributes: {},
    original: "",
    flags: [],
    startLine: 0,
    endLine: 0,
    prevComment: [],
    ...init,
  };
}

/** Arguments of an instruction node, in order. */
export function nodeArgs(node: Node): string[] {
  const out: string[] = [];
  for (let n = node.next; n !== undefined; n = n.next) out.push(n.value);
  return out;
}

/** Go's strconv.Quote for a (well-formed) string. */
export function goQuote(s: string): string {
  // Here, not at module level: compiling its Unicode classes costs ~0.5 ms, and only AST dumps (parse) quote.
  const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case "\x07":
        out += "\\a";
        continue;
      case "\b":
        out += "\\b";
        continue;
      case "\f":
        out += "\\f";
        continue;
      case "\n":
        out += "\\n";
        continue;
      case "\r":
        out += "\\r";
        continue;
      case "\t":
        out += "\\t";
        continue;
      case "\v":
        out += "\\v";
        continue;
      case "\\":
        out += "\\\\";
        continue;
      case '"':
        out += '\\"';
        continue;
    }
    if (cp >= 0xdc80 && cp <= 0xdcff) {
      // a raw invalid byte (see decodeUtf8Lossless): Go prints it as \xNN
      out += `\\x${(cp - 0xdc00).toString(16).padStart(2, "0")}`;
    } else if (cp >= 0xd800 && cp <= 0xdfff) {
      // any other lone surrogate: Go would hold U+FFFD (printable)
      out += "\ufffd";
    } else if (PRINTABLE.test(ch)) {
      out += ch;
    } else if (cp < 0x80) {
      out += `\\x${cp.toString(16).padStart(2, "0")}`;
    } else if (cp < 0x10000) {
      out += `\\u${cp.toString(16).padStart(4, "0")}`;
    } else {
      out += `\\U${cp.toString(16).padStart(8, "0")}`;
    }
  }
  return `${out}"`;
}

/** BuildKit's Node.Dump(): `(name ["flag"] "arg" ...)` per instruction, one per line. */
export function dumpAst(node: Node): string {
  let str = node.value.toLowerCase();
  if (node.flags.length > 0) str += ` [${node.flags.map(goQuote).join(" ")}]`;
  for (const child of node.children) str += `(${dumpAst(child)})\n`;
  for (let n = node.next; n !== undefined; n = n.next) {
    str += n.children.length > 0 ? ` ${dumpAst(n)}` : ` ${goQuote(n.value)}`;
  }
  return goTrimSpace(str);
}

function goTrimSpace(s: string): string {
  return s.replace(/^[\t\n\v\f\r \u0085\u00a0]+|[\t\n\v\f\r \u0085\u00a0]+$/g, "");
}
