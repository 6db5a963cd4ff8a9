/**
 * Located Dockerfile errors and warnings, and "did you mean" suggestions.
 */
import { OcibuildError } from "../errors.js";

export interface ParseWarning {
  /** Stable code, e.g. DOCKERFILE_EMPTY_CONTINUATION. */
  code: string;
  message: string;
  line?: number;
}

/** What an error needs to point at the source. */
export interface SourceContext {
  file: string;
  /** The file's lines, without line terminators. */
  lines: string[];
}

/** An OcibuildError naming `file:line`, with the offending lines as the snippet. */
export function dockerfileError(
  code: string,
  message: string,
  ctx: SourceContext,
  startLine?: number,
  endLine?: number,
  extra: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {},
): OcibuildError {
  if (startLine === undefined || startLine < 1) {
    return new OcibuildError(code, `${ctx.file}: ${message}`, { file: ctx.file, ...extra });
  }
  const last = Math.max(startLine, Math.min(endLine ?? startLine, startLine + 9, ctx.lines.length));
  const snippet = ctx.lines.slice(startLine - 1, last).join("\n");
  return new OcibuildError(code, `${ctx.file}:${startLine}: ${message}`, {
    file: ctx.file,
    line: startLine,
    snippet: snippet === "" && startLine > ctx.lines.length ? undefined : snippet,
    ...extra,
  });
}

/** Levenshtein distance between two short strings. */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** The closest candidate to `value`, if it is close enough to be a plausible typo. */
export function suggest(value: string, candidates: readonly string[], caseSensitive = false): string | undefined {
  const v = caseSensitive ? value : value.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(v, caseSensitive ? c : c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  if (best === undefined || bestDistance === 0) return best;
  const limit = Math.max(1, Math.min(3, Math.floor(Math.max(v.length, best.length) / 3)));
  return bestDistance <= limit ? best : undefined;
}
