import { OcibuildError } from "../errors.js";

export interface IgnorePattern {
  /** Cleaned pattern text, without the leading `!`. */
  pattern: string;
  /** True for `!pattern` (re-include). */
  exclusion: boolean;
}

export interface IgnoreMatcher {
  ignores(relPath: string): boolean;
  mayMatchUnder(dirRelPath: string): boolean;
}

export function parseDockerignore(text: string): IgnorePattern[] {
  void text;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", "not written yet");
}

export function createIgnoreMatcher(patterns: IgnorePattern[]): IgnoreMatcher {
  void patterns;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", "not written yet");
}
