/**
 * Registry errors: keep the HTTP status and the registry's JSON error list, and
 * say whether a retry could help (retry.ts decides which can). Never include credentials.
 */
import { OcibuildError, optionWords } from "../../errors.js";
import { causeChain, codeOf, isRetryableNetworkError, isRetryableStatus } from "./retry.js";

export interface RegistryErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

const MAX_ERROR_BODY = 64 * 1024;

/** Read at most 64 KiB of an error body (then drop the rest). */
export async function readErrorBody(body: AsyncIterable<Buffer> & { destroy?: () => void }): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      if (n < MAX_ERROR_BODY) chunks.push(c.subarray(0, MAX_ERROR_BODY - n));
      n += c.length;
      if (n >= MAX_ERROR_BODY) break;
    }
  } catch {
    /* the body of an error response is best-effort */
  }
  body.destroy?.();
  return Buffer.concat(chunks).toString("utf8");
}

export function parseErrorList(text: string): RegistryErrorEntry[] {
  try {
    const o = JSON.parse(text) as { errors?: unknown };
    if (Array.isArray(o.errors)) {
      return o.errors
        .filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null)
        .map((e) => ({ code: String(e.code ?? "UNKNOWN"), message: typeof e.message === "string" ? e.message : undefined, detail: e.detail }));
    }
  } catch {
    /* not JSON */
  }
  return [];
}

/** Build the error for an unexpected HTTP status. `what` says what we were doing ("GET manifest app:v1"). */
export function httpError(registry: string, what: string, status: number, bodyText: string): OcibuildError {
  const errors = parseErrorList(bodyText);
  const summary = errors.length
    ? errors.map((e) => `${e.code}${e.message ? `: ${e.message}` : ""}`).join("; ")
    : bodyText.trim().slice(0, 200).replace(/\s+/g, " ");
  const details = { status, registry, errors };
  const suffix = summary ? ` (${summary})` : "";
  if (status === 401) {
    return new OcibuildError("REGISTRY_UNAUTHORIZED", `${what}: registry ${registry} refused the request as unauthorized (HTTP 401)${suffix}`, {
      details,
      hint: `check the credentials for ${registry} in your docker config.json (docker login ${registry})`,
    });
  }
  if (status === 403) {
    return new OcibuildError("REGISTRY_DENIED", `${what}: registry ${registry} denied access (HTTP 403)${suffix}`, { details });
  }
  if (status === 404) {
    return new OcibuildError("REGISTRY_NOT_FOUND", `${what}: not found on ${registry} (HTTP 404)${suffix}`, { details });
  }
  if (status === 429) {
    return new OcibuildError("REGISTRY_TOO_MANY_REQUESTS", `${what}: registry ${registry} is rate limiting (HTTP 429)${suffix}`, { details, retryable: true });
  }
  if (status >= 500) {
    return new OcibuildError("REGISTRY_SERVER_ERROR", `${what}: registry ${registry} failed with HTTP ${status}${suffix}`, {
      details,
      retryable: isRetryableStatus(status),
    });
  }
  return new OcibuildError("REGISTRY_HTTP_ERROR", `${what}: registry ${registry} answered HTTP ${status}${suffix}`, {
    details,
    retryable: isRetryableStatus(status),
  });
}

export function isTlsError(e: unknown): boolean {
  return causeChain(e).some(
    (c) => /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_OSSL|HOSTNAME|ALTNAME/.test(codeOf(c) ?? "") || /wrong version number|ssl3_get_record|packet length too long/i.test((c as Error).message ?? ""),
  );
}

/** The peer spoke TLS, but its certificate could not be verified. */
export function isCertificateError(e: unknown): boolean {
  return causeChain(e).some((c) => /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME/.test(codeOf(c) ?? ""));
}

export function networkError(registry: string, what: string, e: unknown): OcibuildError {
  if (e instanceof OcibuildError) return e;
  if (isTlsError(e)) {
    return new OcibuildError("REGISTRY_TLS", `${what}: TLS with ${registry} failed: ${(e as Error).message}`, {
      cause: e,
      details: { registry },
      hint:
        `trust the registry's CA with ${optionWords("registry.registryCertificates", `${registry}=/path/ca.pem`)}, or (unsafe) ${optionWords("registry.skipTlsVerifyRegistries", registry)}; ` +
        `use ${optionWords("registry.insecureRegistries", registry)} for plain HTTP`,
    });
  }
  const code = codeOf(e) ?? codeOf((e as { cause?: unknown })?.cause);
  return new OcibuildError("REGISTRY_UNREACHABLE", `${what}: cannot talk to ${registry}: ${(e as Error)?.message ?? String(e)}${code ? ` (${code})` : ""}`, {
    cause: e,
    retryable: isRetryableNetworkError(e),
    details: { registry, code },
  });
}
