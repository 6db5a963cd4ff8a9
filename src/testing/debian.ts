/**
 * Test and benchmark support: a real Debian base image, `mmdebstrap
 * --variant=minbase bookworm` from the mirror in this machine's apt sources, made
 * into a one-layer OCI image with the library's own layer writer and kept as an
 * OCI layout under a cache directory (made once; temp dir, then rename). No public
 * registry is involved. Needs root and mmdebstrap (scripts/setup.sh installs it).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { descriptorOf, encodeJson } from "../oci/manifest.js";
import { OciLayout } from "../oci/layout.js";
import { MediaType } from "../oci/media-types.js";
import { walkDirectory } from "../oci/tar-entries.js";

const pexec = promisify(execFile);

export const DEBIAN_SUITE = "bookworm";
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Why a Debian base cannot be made here, or undefined when it can. */
export function debianBaseMissing(): string | undefined {
  if (process.getuid?.() !== 0) return "making a Debian base with mmdebstrap needs root";
  if (!existsSync("/usr/bin/mmdebstrap")) return "mmdebstrap is not installed (scripts/setup.sh installs it)";
  return undefined;
}

/** The apt sources of this machine (a deb822 .sources file or sources.list), used as mmdebstrap's mirror. */
async function aptSources(): Promise<string[]> {
  const d = "/etc/apt/sources.list.d";
  const files = existsSync(d) ? (await readdir(d)).filter((f) => f.endsWith(".sources") || f.endsWith(".list")).map((f) => join(d, f)) : [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  const debian: string[] = [];
  for (const f of files) {
    const text = await readFile(f, "utf8");
    if (/^\s*(URIs:|deb\s)/m.test(text) && /debian/.test(text)) debian.push(f);
  }
  return debian;
}

/** The minbase root filesystem under `cacheDir`, made with mmdebstrap the first time. */
export async function debianRootfs(cacheDir: string, signal?: AbortSignal): Promise<string> {
  const dir = join(cacheDir, "debian-rootfs");
  if (existsSync(dir)) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(cacheDir, { recursive: true });
  await rm(tmp, { recursive: true, force: true });
  try {
    await pexec("mmdebstrap", ["--quiet", "--variant=minbase", "--mode=root", DEBIAN_SUITE, tmp, ...(await aptSources())], {
      signal,
      maxBuffer: 16 << 20,
    });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

/** An OCI layout under `cacheDir` holding the Debian base, tagged DEBIAN_SUITE. */
export async function debianLayout(cacheDir: string, signal?: AbortSignal): Promise<{ dir: string; ref: string }> {
  const dir = join(cacheDir, "debian-layout");
  if (existsSync(join(dir, "index.json"))) return { dir, ref: DEBIAN_SUITE };
  const rootfs = await debianRootfs(cacheDir, signal);
  const tmp = await mkdtemp(join(cacheDir, "debian-layout.tmp-"));
  try {
    const layout = await OciLayout.create(tmp, signal);
    // /dev, /proc, /sys stay as empty directories, as in Docker's debian images.
    const filter = (rel: string) => !/^(dev|proc|sys)\/./.test(rel);
    const layer = await layout.writeLayer(walkDirectory(rootfs, { filter, signal }), { signal });
    const config = encodeJson(MediaType.OCI_CONFIG, {
      created: "2025-05-20T00:00:00Z",
      architecture: process.arch === "arm64" ? "arm64" : "amd64",
      os: "linux",
      config: { Env: [PATH_ENV], Cmd: ["bash"] },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
      history: [{ created: "2025-05-20T00:00:00Z", created_by: `mmdebstrap --variant=minbase ${DEBIAN_SUITE}` }],
    });
    await layout.writeBlob(config.bytes, { digest: config.digest }, signal);
    const manifest = encodeJson(MediaType.OCI_MANIFEST, {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      config: descriptorOf(config),
      layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
    });
    await layout.writeBlob(manifest.bytes, { digest: manifest.digest }, signal);
    await layout.addManifest(descriptorOf(manifest), DEBIAN_SUITE, signal);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, ref: DEBIAN_SUITE };
}
