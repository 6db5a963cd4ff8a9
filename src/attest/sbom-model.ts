/**
 * What the SBOM scanner finds: one package per (file it was found in, package),
 * with the layer that added it, and its purl once the distribution is known.
 */
import type { DiffID, Digest } from "../oci/digest.js";
import { formatPurl } from "./purl.js";
import { distroQualifier, type OsRelease } from "./sbom-os.js";
import { npmPurlName, pypiName } from "./sbom-lang.js";

export type SbomPackageType = "deb" | "apk" | "pypi" | "npm" | "golang";

export interface SbomPackage {
  type: SbomPackageType;
  name: string;
  version?: string;
  /** deb and apk: the package's architecture. */
  arch?: string;
  /** deb: the source package (name, and version when it differs); apk: the origin. */
  source?: { name: string; version?: string };
  /** The declared licence as an SPDX expression, where the metadata says. */
  license?: string;
  /** SPDX form: "Person: Name (email)". */
  supplier?: string;
  originator?: string;
  homepage?: string;
  /** The file it was found in, absolute ("/var/lib/dpkg/status", "/usr/local/bin/app"). */
  path: string;
  /** The index, in the layers scanned, of the layer that added it. */
  layer: number;
  purl: string;
}

/** A scanned layer as the document names it. */
export interface SbomLayerRef {
  diffId: DiffID;
  /** The layer blob's digest (compressed), where known: BuildKit's `layerID`. */
  digest?: Digest;
}

/** What the scanner records before the distribution is known. */
export type FoundPackage = Omit<SbomPackage, "purl">;

function goPurlParts(path: string): { namespace?: string; name: string } {
  const slash = path.lastIndexOf("/");
  return slash === -1 ? { name: path } : { namespace: path.slice(0, slash), name: path.slice(slash + 1) };
}

/** The purl of a package found in an image whose os-release says `os`. */
export function purlOf(p: FoundPackage, os: OsRelease | undefined): string {
  switch (p.type) {
    case "deb":
    case "apk": {
      const upstream = p.source !== undefined && p.source.name !== p.name ? p.source.name : undefined;
      const namespace = os?.id ?? (p.type === "deb" ? "debian" : "alpine");
      const qualifiers = { arch: p.arch, distro: distroQualifier(os), upstream };
      return formatPurl({ type: p.type, namespace, name: p.name, version: p.version, qualifiers });
    }
    case "pypi":
      return formatPurl({ type: "pypi", name: pypiName(p.name), version: p.version });
    case "npm":
      return formatPurl({ type: "npm", ...npmPurlName(p.name), version: p.version });
    case "golang":
      // The standard library is "stdlib" at the toolchain's version without its "go", as scanners write it.
      if (p.name === "stdlib") return formatPurl({ type: "golang", name: "stdlib", version: p.version?.replace(/^go/, "") });
      return formatPurl({ type: "golang", ...goPurlParts(p.name), version: p.version });
  }
}
