/**
 * Credentials from Docker's config.json ($DOCKER_CONFIG/config.json,
 * ~/.docker/config.json) and podman's auth.json ($REGISTRY_AUTH_FILE,
 * $XDG_RUNTIME_DIR/containers/auth.json): `auths` (base64 `auth`,
 * `username`/`password`, `identitytoken`), `credHelpers` and `credsStore`
 * (running `docker-credential-<name> get`). Secrets never leave this module
 * except as an Authorization header.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { runProcess } from "../../process.js";

export interface Credential {
  username?: string;
  password?: string;
  /** A refresh token (docker's `identitytoken`, or a helper's `<token>` user). */
  identityToken?: string;
  /** A ready bearer token (`registrytoken`). */
  registryToken?: string;
  /** Where it came from, for messages: a file path or "docker-credential-NAME". Never the secret. */
  source: string;
}

interface ConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

const HUB_ALIASES = ["docker.io", "index.docker.io", "registry-1.docker.io"];
const HUB_SERVER_URL = "https://index.docker.io/v1/";

/** "https://index.docker.io/v1/" -> "docker.io"; "https://host:5000/v2/" -> "host:5000". */
export function normalizeAuthKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, "");
  const slash = k.indexOf("/");
  if (slash >= 0) k = k.slice(0, slash);
  k = k.toLowerCase();
  return HUB_ALIASES.includes(k) ? "docker.io" : k;
}

/**
 * A key's host and, for podman's repository-specific keys ("quay.io/org/app",
 * written without a scheme), its repository path. Keys with a scheme
 * ("https://index.docker.io/v1/") are host-only, as Docker writes them.
 */
export function authKeyScope(key: string): { host: string; path?: string } {
  const k = key.trim();
  if (/^[a-z]+:\/\//i.test(k)) return { host: normalizeAuthKey(k) };
  const slash = k.indexOf("/");
  if (slash < 0 || slash === k.length - 1) return { host: normalizeAuthKey(k) };
  return { host: normalizeAuthKey(k.slice(0, slash)), path: k.slice(slash + 1).replace(/\/+$/, "") };
}

/** The entry of `entries` that best matches host+repository: the longest repository path, then host-only. */
function bestMatch<T>(entries: Record<string, T> | undefined, host: string, repository: string | undefined): T | undefined {
  let best: { len: number; value: T } | undefined;
  for (const [k, value] of Object.entries(entries ?? {})) {
    const scope = authKeyScope(k);
    if (scope.host !== host) continue;
    let len = 0;
    if (scope.path !== undefined) {
      if (repository === undefined || !(repository === scope.path || repository.startsWith(`${scope.path}/`))) continue;
      len = scope.path.length;
    }
    if (!best || len > best.len) best = { len, value };
  }
  return best?.value;
}

export interface CredentialStoreOptions {
  authConfigPath?: string;
  env?: Record<string, string | undefined>;
}

export class CredentialStore {
  private files?: Promise<{ path: string; config: ConfigFile }[]>;
  private readonly cache = new Map<string, Promise<Credential | undefined>>();

  constructor(private readonly opts: CredentialStoreOptions = {}) {}

  /** The candidate files, in order of precedence. */
  candidatePaths(): string[] {
    const env = this.opts.env ?? {};
    if (this.opts.authConfigPath) return [this.opts.authConfigPath];
    const paths: string[] = [];
    if (env.REGISTRY_AUTH_FILE) paths.push(env.REGISTRY_AUTH_FILE);
    if (env.DOCKER_CONFIG) paths.push(join(env.DOCKER_CONFIG, "config.json"));
    else if (env.HOME) paths.push(join(env.HOME, ".docker", "config.json"));
    if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, "containers", "auth.json"));
    return paths;
  }

  private load(): Promise<{ path: string; config: ConfigFile }[]> {
    this.files ??= (async () => {
      const out: { path: string; config: ConfigFile }[] = [];
      for (const path of this.candidatePaths()) {
        let text: string;
        try {
          text = await readFile(path, "utf8");
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT" && !this.opts.authConfigPath) continue;
          throw new OcibuildError("AUTH_CONFIG_UNREADABLE", `cannot read registry credentials file ${path}: ${(e as Error).message}`, { cause: e, file: path });
        }
        try {
          const config = JSON.parse(text) as ConfigFile;
          if (typeof config !== "object" || config === null) throw new Error("not a JSON object");
          out.push({ path, config });
        } catch (e) {
          throw new OcibuildError("AUTH_CONFIG_INVALID", `registry credentials file ${path} is not valid JSON: ${(e as Error).message}`, { file: path });
        }
      }
      return out;
    })();
    return this.files;
  }

  /**
   * Credentials for a registry host ("docker.io", "ghcr.io", "127.0.0.1:5000") and
   * optionally a repository (podman's repository-specific entries), or undefined for anonymous.
   */
  get(registry: string, signal?: AbortSignal, repository?: string): Promise<Credential | undefined> {
    const host = normalizeAuthKey(registry);
    const key = `${host}/${repository ?? ""}`;
    let p = this.cache.get(key);
    if (!p) {
      p = this.lookup(host, repository, signal);
      this.cache.set(key, p);
      p.catch(() => this.cache.delete(key));
    }
    return p;
  }

  private async lookup(key: string, repository: string | undefined, signal?: AbortSignal): Promise<Credential | undefined> {
    for (const { path, config } of await this.load()) {
      const helper = bestMatch(config.credHelpers, key, repository);
      if (helper) return this.runHelper(helper, key, signal);
      const entry = bestMatch(
        Object.fromEntries(Object.entries(config.auths ?? {}).filter(([, e]) => e.auth || e.username || e.identitytoken || e.registrytoken)),
        key,
        repository,
      );
      if (entry) return decodeEntry(entry, path, key);
      if (config.credsStore) {
        const c = await this.runHelper(config.credsStore, key, signal);
        if (c) return c;
      }
    }
    return undefined;
  }

  /** Helper answers, per helper and registry: a helper's answer does not depend on the repository. */
  private readonly helperAnswers = new Map<string, Promise<Credential | undefined>>();

  private runHelper(name: string, key: string, signal?: AbortSignal): Promise<Credential | undefined> {
    const id = `${name}\0${key}`;
    let p = this.helperAnswers.get(id);
    if (!p) {
      p = this.spawnHelper(name, key, signal);
      this.helperAnswers.set(id, p);
      p.catch(() => this.helperAnswers.delete(id));
    }
    return p;
  }

  private async spawnHelper(name: string, key: string, signal?: AbortSignal): Promise<Credential | undefined> {
    const bin = `docker-credential-${name}`;
    const serverUrl = key === "docker.io" ? HUB_SERVER_URL : key;
    const r = await runProcess(bin, ["get"], { env: this.opts.env as NodeJS.ProcessEnv | undefined, input: serverUrl, signal }).catch((e: Error) => {
      throw new OcibuildError("AUTH_HELPER_FAILED", `credential helper ${bin} for ${key} could not run: ${(e as NodeJS.ErrnoException).code ?? e.message}`, {
        cause: e,
        hint: `install ${bin} on PATH or remove it from your docker config.json`,
      });
    });
    if (r.code !== 0) {
      if (/credentials not found|not found in native keychain/i.test(`${r.stdout}\n${r.stderr}`)) return undefined;
      // A helper's stderr is not trusted to be free of secrets: do not echo it.
      throw new OcibuildError("AUTH_HELPER_FAILED", `credential helper ${bin} failed for ${key} (exit status ${r.code})`);
    }
    try {
      const o = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
      if (!o.Secret) return undefined;
      if (o.Username === "<token>") return { identityToken: o.Secret, source: bin };
      return { username: o.Username ?? "", password: o.Secret, source: bin };
    } catch {
      // Also `null`, whose fields cannot be read.
      throw new OcibuildError("AUTH_HELPER_FAILED", `credential helper ${bin} printed something that is not JSON for ${key}`);
    }
  }
}

function decodeEntry(
  entry: { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string },
  path: string,
  key: string,
): Credential {
  const c: Credential = { source: path };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) throw new OcibuildError("AUTH_CONFIG_INVALID", `the "auth" entry for ${key} in ${path} is not base64 of user:password`, { file: path });
    c.username = decoded.slice(0, colon);
    c.password = decoded.slice(colon + 1);
  }
  if (entry.username !== undefined) c.username = entry.username;
  if (entry.password !== undefined) c.password = entry.password;
  if (entry.identitytoken) c.identityToken = entry.identitytoken;
  if (entry.registrytoken) c.registryToken = entry.registrytoken;
  return c;
}
