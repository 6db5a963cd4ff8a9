/**
 * The auth layer: an Authorization header on every send to the registry's own host
 * once its challenge is known (never to another host a redirect leads to), and a
 * 401's challenge answered once per request (learn it, drop the refused token, ask
 * for the scopes it names, send again). The Bearer/Basic logic itself is
 * ../auth/authenticator.ts; its token requests go through `tokenSender`, with the
 * one retry policy.
 */
import { OcibuildError } from "../../errors.js";
import type { Authenticator, TokenSender } from "../auth/authenticator.js";
import { mergeScopes, parseChallenges, scopesFromChallenge } from "../auth/challenge.js";
import { httpError, networkError, readErrorBody } from "./errors.js";
import type { Exchange, Reply, Send } from "./exchange.js";
import type { HttpResult } from "./http.js";
import { abortError, type RetryCause, type RetryPolicy, statusCause } from "./retry.js";
import type { Wire } from "./wire.js";

/** A token service's answer is a few KiB of JSON; more is not a token. */
export const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

/** The error for a second 401: the credentials were refused (naming where they came from), or there were none. */
async function refused(auth: Authenticator, ex: Exchange, res: Reply): Promise<OcibuildError> {
  const { registry, what, signal } = ex.req;
  const text = await readErrorBody(res.body);
  const cred = await auth.credentials.get(registry, signal, ex.scopes[0]?.repository).catch(() => undefined);
  const err = httpError(registry, what, res.statusCode, text);
  return new OcibuildError(
    "REGISTRY_UNAUTHORIZED",
    cred ? `authentication to ${registry} failed: the credentials from ${cred.source} were refused (${what})` : err.message,
    { details: err.details, hint: err.hint },
  );
}

export function authenticating(auth: Authenticator, next: Send): Send {
  return async (ex, hop) => {
    const { registry, signal } = ex.req;
    if (hop.url.host !== ex.origin.host) return next(ex, hop);
    for (;;) {
      // A send whose scheme is still a guess (scheme.ts) carries no credentials: the host has not yet answered as a registry over it.
      const guessing = ex.guess !== undefined && !ex.guess.confirmed;
      const authorization = !guessing && auth.knowsChallenge(registry) ? await auth.authorize(registry, ex.scopes, signal) : undefined;
      const res = await next(ex, { ...hop, authorization });
      if (res.statusCode !== 401) return res;
      if (ex.authRetried) throw await refused(auth, ex, res);
      ex.authRetried = true;
      const www = res.headers["www-authenticate"];
      await res.body.dump().catch(() => {});
      if (!auth.learn(registry, www)) throw httpError(registry, ex.req.what, 401, "");
      auth.invalidate(registry, ex.scopes);
      // The registry may name the scope it wants (insufficient_scope): ask for that too.
      ex.scopes = mergeScopes(ex.scopes, scopesFromChallenge(parseChallenges(www)[0]?.params.scope));
    }
  };
}

/**
 * Token requests: straight to the realm (its host's TLS settings), retried by the
 * policy like any request. The body is read within the attempt (a reset while
 * reading it is retried too), except that of a retryable status on the last attempt.
 */
export function tokenSender(wire: Wire, policy: RetryPolicy): TokenSender {
  return async (url, init) => {
    const job = { registry: init.registry, what: `get a token from ${url.origin}`, signal: init.signal, retryResult: (a: TokenAnswer) => a.retry };
    try {
      const a = await policy.run(job, async (): Promise<TokenAnswer> => {
        const res = await wire.send(url, { method: init.method, headers: init.headers, body: init.body, signal: init.signal });
        const retry = statusCause(res);
        return retry ? { res, retry } : { res, text: await res.body.text(MAX_TOKEN_RESPONSE_BYTES) };
      });
      return { status: a.res.statusCode, text: a.text ?? (await a.res.body.text(MAX_TOKEN_RESPONSE_BYTES)) };
    } catch (e) {
      if (init.signal?.aborted) throw abortError(init.signal);
      throw networkError(url.host, `getting a token from ${url.origin}`, e);
    }
  };
}

interface TokenAnswer {
  res: HttpResult;
  text?: string;
  retry?: RetryCause;
}
