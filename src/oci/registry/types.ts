import type { Digest } from "../digest.js";

export interface RetryOptions {
  /** Total attempts including the first (default 5). */
  attempts?: number;
  /** First backoff delay (default 250 ms); doubles each time, with jitter. */
  baseDelayMs?: number;
  /** Cap for one backoff delay (default 10 s). Retry-After is honoured up to 60 s. */
  maxDelayMs?: number;
}

export interface ProgressEvent {
  kind: "push" | "pull" | "mount" | "exists";
  digest: Digest;
  bytes: number;
  total?: number;
}

export interface RegistryOptions {
  /** Registries (host[:port]) that may be reached over plain HTTP. Loopback always may, like Docker. */
  insecureRegistries?: string[];
  /** Do not verify TLS certificates of any registry. */
  skipTlsVerify?: boolean;
  /** Do not verify TLS certificates of these registries (host[:port]). */
  skipTlsVerifyRegistries?: string[];
  /** host[:port] -> path of a PEM file with CA certificates trusted for that registry. */
  registryCertificates?: Record<string, string>;
  /**
   * Directories laid out like Docker's certs.d: DIR/HOST[:PORT]/*.crt are CA certificates
   * trusted for that registry. Default: /etc/docker/certs.d and /etc/containers/certs.d.
   */
  certsDirs?: string[];
  /** host[:port] -> a client certificate and its key (PEM files) for mutual TLS (kaniko's --registry-client-cert). */
  registryClientCerts?: Record<string, { cert: string; key: string }>;
  /** Mirrors (host[:port] or URL) tried first for docker.io pulls, falling back to the origin. */
  registryMirrors?: string[];
  /**
   * Mirrors for any registry (kaniko's --registry-map): registry host -> mirrors
   * (host[:port] or URL) tried in order before it. docker.io's mirrors join registryMirrors.
   */
  registryMap?: Record<string, string[]>;
  /** Pull only from the mirrors when a registry has some: no fallback to the origin (kaniko's --skip-default-registry-fallback). */
  skipDefaultRegistryFallback?: boolean;
  /** Every registry may be reached over plain HTTP and unverified TLS (kaniko's --insecure-pull). */
  insecureAll?: boolean;
  /** An explicit docker config.json / podman auth.json; otherwise the usual places are searched. */
  authConfigPath?: string;
  /** Injected environment (DOCKER_CONFIG, REGISTRY_AUTH_FILE, HOME, PATH, NODE_EXTRA_CA_CERTS...). */
  env?: Record<string, string | undefined>;
  /**
   * A request whose connection moves less than 1 KiB in this many seconds while it
   * waits on the registry fails with REGISTRY_TIMEOUT naming the host (and is retried
   * like other network failures). Default 60.
   */
  timeoutSeconds?: number;
  /** Parallel blob transfers (default 4). */
  concurrency?: number;
  retry?: RetryOptions;
  /** Uploads larger than this use chunked PATCH uploads (default 16 MiB). */
  chunkSize?: number;
  userAgent?: string;
  onProgress?: (ev: ProgressEvent) => void;
  /** Told before each retry: what failed and how long we wait (Retry-After or backoff). */
  onRetry?: (ev: RetryEvent) => void;
}

export interface RetryEvent {
  registry: string;
  what: string;
  /** The attempt that failed (1-based). */
  attempt: number;
  delayMs: number;
  /** "HTTP 503", "ECONNRESET", ... (never credentials). */
  reason: string;
  status?: number;
}

/** An access scope for token auth: repository:NAME:ACTIONS. */
export interface Scope {
  repository: string;
  actions: ("pull" | "push")[];
}
