/**
 * TLS to registries, per host: the CAs every host trusts (Node's, the system bundle,
 * NODE_EXTRA_CA_CERTS) plus a host's own CA files (--registry-certificate, certs.d
 * directories), its client certificate for mutual TLS, and whether to verify it at
 * all. Read at a host's first HTTPS request. node:tls itself is loaded only then: a
 * build that talks to no HTTPS host never pays for it.
 *
 * NODE_EXTRA_CA_CERTS is read here, from the environment given, and not left to Node:
 * bin/ocibuild starts Node without it (Node parses it at start-up, ~37 ms of every run).
 */
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { SecureContext } from "node:tls";
import { OcibuildError } from "../../errors.js";
import { hostOf } from "./hosts.js";
import type { RegistryOptions } from "./types.js";

const DEFAULT_CERTS_DIRS = ["/etc/docker/certs.d", "/etc/containers/certs.d"];
const SYSTEM_CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/**
 * The CAs every TLS peer is trusted with by default: Node's bundled roots, the
 * system bundle (as Docker and BuildKit trust it), and NODE_EXTRA_CA_CERTS from `env`;
 * with one secure context made of them. Registries (TlsTrust), ADD URLs and a remote
 * BuildKit without a CA of its own use it.
 */
export async function commonTrust(env: Record<string, string | undefined> = {}): Promise<{ ca: string[]; context: SecureContext }> {
  const { createSecureContext, rootCertificates } = await import("node:tls");
  const ca: string[] = [...rootCertificates];
  for (const f of SYSTEM_CA_BUNDLES) {
    try {
      ca.push(await readFile(f, "utf8"));
      break;
    } catch {
      /* not on this system */
    }
  }
  const extra = env.NODE_EXTRA_CA_CERTS;
  if (extra) {
    try {
      ca.push(await readFile(extra, "utf8"));
    } catch (e) {
      throw new OcibuildError("REGISTRY_CERTIFICATE_UNREADABLE", `cannot read NODE_EXTRA_CA_CERTS file ${extra}: ${(e as Error).message}`, { cause: e });
    }
  }
  return { ca, context: createSecureContext({ ca }) };
}

export class TlsTrust {
  constructor(
    private readonly opts: RegistryOptions,
    /** Whether a host's certificate is not to be verified (--skip-tls-verify, insecure registries). */
    private readonly skipVerify: (host: string) => boolean,
  ) {}

  /**
   * The CAs every host trusts (Node's, the system bundle, NODE_EXTRA_CA_CERTS) and one
   * secure context made of them, read and built once per transport: a docker.io pull
   * alone talks TLS to three hosts (registry, token service, blob CDN), and each
   * context of the full CA list costs tens to hundreds of milliseconds.
   */
  private commonTrust?: Promise<{ ca: string[]; context: SecureContext }>;

  private common(): Promise<{ ca: string[]; context: SecureContext }> {
    this.commonTrust ??= commonTrust(this.opts.env);
    this.commonTrust.catch(() => (this.commonTrust = undefined));
    return this.commonTrust;
  }

  /** TLS for a host: the common trust, plus its own CA files (--registry-certificate, certs.d), if any. */
  async options(host: string): Promise<{ context: SecureContext; rejectUnauthorized: boolean }> {
    const common = await this.common();
    const own: string[] = [];
    const certs = this.opts.registryCertificates ?? {};
    const given = Object.entries(certs).find(([h]) => hostOf(h).toLowerCase() === host.toLowerCase())?.[1];
    if (given) {
      try {
        own.push(await readFile(given, "utf8"));
      } catch (e) {
        throw new OcibuildError("REGISTRY_CERTIFICATE_UNREADABLE", `cannot read the CA certificate ${given} given for ${host}: ${(e as Error).message}`, { cause: e });
      }
    }
    for (const d of this.opts.certsDirs ?? DEFAULT_CERTS_DIRS) {
      let names: string[];
      try {
        names = await readdir(join(d, host));
      } catch {
        continue;
      }
      for (const n of names.filter((x) => x.endsWith(".crt")).sort()) {
        try {
          own.push(await readFile(join(d, host, n), "utf8"));
        } catch (e) {
          throw new OcibuildError("REGISTRY_CERTIFICATE_UNREADABLE", `cannot read the CA certificate ${join(d, host, n)}: ${(e as Error).message}`, { cause: e });
        }
      }
    }
    const client = await this.clientCert(host);
    const { createSecureContext } = await import("node:tls");
    const context = own.length === 0 && !client ? common.context : createSecureContext({ ca: [...common.ca, ...own], ...client });
    return { context, rejectUnauthorized: !this.skipVerify(host) };
  }

  /** The client certificate and key given for a host (mutual TLS), read as PEM. */
  private async clientCert(host: string): Promise<{ cert: string; key: string } | undefined> {
    const given = Object.entries(this.opts.registryClientCerts ?? {}).find(([h]) => hostOf(h).toLowerCase() === host.toLowerCase())?.[1];
    if (!given) return undefined;
    const read = async (path: string) => {
      try {
        return await readFile(path, "utf8");
      } catch (e) {
        throw new OcibuildError("REGISTRY_CERTIFICATE_UNREADABLE", `cannot read the client certificate or key ${path} given for ${host}: ${(e as Error).message}`, { cause: e });
      }
    };
    return { cert: await read(given.cert), key: await read(given.key) };
  }
}
