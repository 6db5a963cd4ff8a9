/**
 * Located Dockerfile errors and warnings, and "did you mean" suggestions.
 */
import { type ErrorCode, OcibuildError } from "../errors.js";

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
  code: ErrorCode,
  message: string,
  ctx: SourceContext,
  startLine?: number,
  endLine?: number,
  extra: { hint?: string; cause?: unknown; details?: Record<string, unknown>; retryable?: boolean } = {},
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

/**
 * `err` located at a Dockerfile instruction, as every other build error is: the same
 * code, hint, details and retryability, the message prefixed with file:line and the
 * line shown. An error that already names a file, an abort or a non-ocibuild error
 * is returned as it is.
 */
export function locateError(err: unknown, ctx: SourceContext, startLine: number, endLine?: number, message?: string): unknown {
  if (!(err instanceof OcibuildError) || err.file !== undefined || err.code === "ABORTED") return err;
  return dockerfileError(err.code, message ?? err.message, ctx, startLine, endLine, { hint: err.hint, cause: err, details: err.details, retryable: err.retryable });
}

/** Edit distance with adjacent transpositions counted as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
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
