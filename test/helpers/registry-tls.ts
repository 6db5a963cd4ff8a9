/**
 * TLS and credentials for test registries: a private CA and a server
 * certificate for 127.0.0.1 made with openssl, and an htpasswd file (bcrypt)
 * made with htpasswd -Bbn. Everything lives in a temp dir the caller removes.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export function haveOpenssl(): boolean {
  return existsSync("/usr/bin/openssl");
}
export function haveHtpasswd(): boolean {
  return existsSync("/usr/bin/htpasswd");
}

export interface TestCA {
  /** PEM of the CA certificate (what clients trust). */
  caCert: string;
  caKey: string;
  /** Server certificate for 127.0.0.1 / localhost, signed by the CA. */
  serverCert: string;
  serverKey: string;
}

/** A CA and a server certificate valid for IP 127.0.0.1 and DNS localhost. */
export async function makeCA(dir: string, name = "ocibuild test CA"): Promise<TestCA> {
  const caKey = join(dir, "ca.key");
  const caCert = join(dir, "ca.pem");
  const serverKey = join(dir, "server.key");
  const serverCsr = join(dir, "server.csr");
  const serverCert = join(dir, "server.pem");
  const ext = join(dir, "server.ext");
  await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", caCert, "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  await run("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", serverKey, "-out", serverCsr, "-subj", "/CN=127.0.0.1"]);
  await writeFile(ext, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await run("openssl", ["x509", "-req", "-in", serverCsr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial", "-out", serverCert, "-days", "2", "-extfile", ext]);
  return { caCert, caKey, serverCert, serverKey };
}

/** A self-signed certificate and its RSA key (for a token issuer). */
export async function makeSelfSigned(dir: string, cn: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${cn}.key`);
  const cert = join(dir, `${cn}.pem`);
  await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${cn}`]);
  return { cert, key };
}

/** An htpasswd file with bcrypt entries (Distribution accepts only bcrypt). */
export async function makeHtpasswd(dir: string, users: Record<string, string>): Promise<string> {
  const lines: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    const { stdout } = await run("htpasswd", ["-Bbn", user, password]);
    lines.push(stdout.trim());
  }
  const path = join(dir, "htpasswd");
  await writeFile(path, `${lines.join("\n")}\n`);
  return path;
}

/** The `auth:` YAML for Distribution's htpasswd access controller. */
export function htpasswdConfig(path: string): string {
  return `auth:\n  htpasswd:\n    realm: ocibuild-test\n    path: ${path}\n`;
}

/** A docker config.json with `auths` for these registries. */
export async function writeDockerConfig(dir: string, auths: Record<string, { username: string; password: string } | { identitytoken: string }>, extra: Record<string, unknown> = {}): Promise<string> {
  const entries: Record<string, Record<string, string>> = {};
  for (const [host, c] of Object.entries(auths)) {
    entries[host] = "identitytoken" in c ? { identitytoken: c.identitytoken } : { auth: Buffer.from(`${c.username}:${c.password}`).toString("base64") };
  }
  const path = join(dir, "config.json");
  await writeFile(path, JSON.stringify({ auths: entries, ...extra }, null, 2));
  return path;
}
