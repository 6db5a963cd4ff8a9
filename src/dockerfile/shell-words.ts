import { OcibuildError } from "../errors.js";

export interface ExpandOptions {
  escapeToken?: "\\" | "`";
  /** Called with each variable name that was looked up and found. */
  onUsed?: (name: string) => void;
  /** Called with each variable name that was looked up and not set. */
  onUnset?: (name: string) => void;
}

export function expandWord(word: string, env: Record<string, string>, options: ExpandOptions = {}): string {
  void env;
  void options;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", `expansion not written yet: ${word}`);
}

export function expandWords(word: string, env: Record<string, string>, options: ExpandOptions = {}): string[] {
  return [expandWord(word, env, options)];
}
