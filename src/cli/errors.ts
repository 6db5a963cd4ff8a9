import { errorCodeInfo } from "../error-codes.js";
import { ExitCode, isOcibuildError, withOptionWords } from "../errors.js";
import type { CliIO } from "./io.js";

/** A flag that takes the option's value as its argument: `--cache-dir`, `--keep DIR`. */
function withValue(flag: string): (value?: string) => string {
  return (value) => (value === undefined ? flag : `${flag} ${value}`);
}

/**
 * The flags for the library options that library messages name (see optionWords),
 * each given the option's value: the CLI speaks of flags.
 */
const OPTION_FLAGS: ReadonlyMap<string, (value?: string) => string> = new Map([
  ["all", withValue("--all")],
  ["allow", withValue("--allow")],
  ["buildArgs", withValue("--build-arg")],
  ["buildContexts", withValue("--build-context")],
  ["cacheDir", withValue("--cache-dir")],
  ["cacheTtlSeconds", withValue("--cache-ttl")],
  ["healthcheck", withValue("--healthcheck")],
  ["keep", withValue("--keep")],
  ["maxLayerSize", withValue("--max-layer-size")],
  ["noCache", withValue("--no-cache")],
  ["noCacheFilter", withValue("--no-cache-filter")],
  ["outputs", withValue("-o")],
  ["platform", withValue("--platform")],
  ["pull", withValue("--pull")],
  ["push", (value?: string) => (value === "false" ? "--no-push" : "--push")],
  ["registry.authConfigPath", withValue("--authfile")],
  ["registry.insecureRegistries", withValue("--insecure-registry")],
  ["registry.registryCertificates", withValue("--registry-certificate")],
  ["registry.skipTlsVerifyRegistries", withValue("--skip-tls-verify-registry")],
  ["registry.timeoutSeconds", withValue("--registry-timeout")],
  ["skipPushPermissionCheck", withValue("--skip-push-permission-check")],
  ["tags", withValue("-t")],
  ["executor", withValue("--executor")],
  ["sandbox.ulimits", withValue("--ulimit")],
  ["secrets", withValue("--secret")],
  ["ssh", withValue("--ssh")],
  // BuildkitExecutor's options.
  ["address", withValue("--buildkit-addr")],
  ["ca", withValue("--buildkit-ca")],
  ["cert", withValue("--buildkit-cert")],
  ["key", withValue("--buildkit-key")],
  ["stagingRepo", withValue("--buildkit-staging-repo")],
]);

/** `text` with the library's option words ("the cacheDir option") replaced by the CLI's flag ("--cache-dir"). */
export function flagWording(text: string): string {
  return withOptionWords(text, (option, value) => OPTION_FLAGS.get(option)?.(value));
}

/** Render an error as `error[CODE]: message` (+ location and snippet), no stack unless debug. */
export function formatError(e: unknown, debug = false): string {
  if (isOcibuildError(e)) {
    let out = `error[${e.code}]: ${flagWording(e.message)}\n`;
    if (e.file !== undefined && !e.message.includes(`${e.file}:`)) {
      out += ` --> ${e.file}${e.line !== undefined ? `:${e.line}` : ""}${e.column !== undefined ? `:${e.column}` : ""}\n`;
    }
    if (e.snippet !== undefined) {
      const gutter = e.line !== undefined ? String(e.line) : "";
      for (const [i, l] of e.snippet.split("\n").entries()) {
        out += `${i === 0 ? gutter.padStart(4) : "    "} | ${l}\n`;
      }
    }
    if (e.hint) out += `hint: ${flagWording(e.hint)}\n`;
    if (debug && e.stack) out += `${e.stack}\n`;
    return out;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  return `error[INTERNAL]: ${err.message}\n${debug ? `${err.stack}\n` : "(this is a bug in ocibuild; run with --debug for details)\n"}`;
}

export function renderError(e: unknown, io: CliIO, debug = false): number {
  io.stderr.write(formatError(e, debug));
  // The table says which codes are usage errors (exit 2); anything else, a bug included, exits 1.
  return isOcibuildError(e) ? errorCodeInfo(e.code).exit : ExitCode.FAILURE;
}
