import { OcibuildError } from "../errors.js";
import type { Node } from "./ast.js";
import type { Instruction } from "./instructions.js";

export interface ParseWarning {
  code: string;
  message: string;
  line?: number;
}

export interface Directives {
  syntax?: string;
  escape: "\\" | "`";
  check?: string;
}

export interface ParseResult {
  directives: Directives;
  ast: Node;
  instructions: Instruction[];
  warnings: ParseWarning[];
  file: string;
  lines: string[];
}

export interface ParseOptions {
  /** File name used in errors ("Dockerfile:12"). Default "Dockerfile". */
  file?: string;
}

export function parseDockerfile(text: string, opts: ParseOptions = {}): ParseResult {
  void text;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", `parser not written yet (${opts.file ?? "Dockerfile"})`);
}
