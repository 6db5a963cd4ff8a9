/**
 * Errors are values with a stable `code`. Every failure a user can cause or meet
 * (bad Dockerfile, bad reference, registry refusal, hostile layer) is an
 * OcibuildError; anything else reaching the CLI is a bug and is reported as such.
 * The codes, their exit statuses and retryability are listed in error-codes.ts.
 */
import { type ErrorCode, errorCodeInfo } from "./error-codes.js";

export type { ErrorCode } from "./error-codes.js";
export interface ErrorLocation {
  /** File the error is about (a Dockerfile, a layer, a context path). */
  file?: string;
  /** 1-based line. */
  line?: number;
  /** 1-based column. */
  column?: number;
  /** The offending source line, shown under the message. */
  snippet?: string;
}

export interface OcibuildErrorOptions extends ErrorLocation {
  cause?: unknown;
  /** Whether retrying the same operation could succeed (network, 5xx, 429); default: the code's (error-codes.ts). */
  retryable?: boolean;
  /** A suggestion shown after the message ("did you mean COPY?"). */
  hint?: string;
  /** Extra structured data (HTTP status, registry error list...). Never credentials. */
  details?: Record<string, unknown>;
}

export class OcibuildError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly hint?: string;
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly snippet?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: OcibuildErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OcibuildError";
    this.code = code;
    this.retryable = options.retryable ?? errorCodeInfo(code).retryable;
    this.hint = options.hint;
    this.file = options.file;
    this.line = options.line;
    this.column = options.column;
    this.snippet = options.snippet;
    this.details = options.details;
  }
}

export function isOcibuildError(e: unknown): e is OcibuildError {
  return e instanceof OcibuildError;
}

/** Exit codes shared by every command. */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
} as const;

/**
 * How a library error names one of the library's options (`the cacheDir option`,
 * `the allow option ("network.host")`): the library speaks of options, and the
 * CLI swaps in its flag for the same words (see `withOptionWords`).
 */
export function optionWords(option: string, value?: string): string {
  return `the ${option} option${value === undefined ? "" : ` (${JSON.stringify(value)})`}`;
}

/** `text` with every `optionWords(option, value)` replaced by `wording(option, value)`, where that gives one. */
export function withOptionWords(text: string, wording: (option: string, value?: string) => string | undefined): string {
  return text.replace(/the ([A-Za-z.]+) option(?: \(("(?:[^"\\]|\\.)*")\))?/g, (all, option: string, value?: string) => {
    return wording(option, value === undefined ? undefined : (JSON.parse(value) as string)) ?? all;
  });
}
