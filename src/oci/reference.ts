/**
 * Image references, parsed and normalised the way Docker does it:
 * "ubuntu" -> docker.io/library/ubuntu:latest, the first path component is a
 * registry host when it contains "." or ":" or is "localhost" (or has an
 * uppercase letter), ports, tags, "@sha256:..." digests, lowercase repositories.
 */
import { OcibuildError } from "../errors.js";
import { type Digest, parseDigest } from "./digest.js";

export const DOCKER_HUB = "docker.io";
const LEGACY_HUB_HOSTS: ReadonlySet<string> = new Set(["index.docker.io", "registry-1.docker.io"]);

/** Docker Hub's other host names ("index.docker.io", "registry-1.docker.io") as "docker.io"; any other host as it is. */
export function canonicalRegistry(host: string): string {
  return LEGACY_HUB_HOSTS.has(host) ? DOCKER_HUB : host;
}

export interface ImageReference {
  /** "docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000" */
  readonly registry: string;
  /** "library/ubuntu", "team/app" */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
  /** The normalised full form: registry/repository[:tag][@digest]. */
  toString(): string;
  /** Docker's short form: "ubuntu:latest", "team/app:v1", "127.0.0.1:5000/app:v1". */
  readonly familiar: string;
  /** registry/repository, without tag or digest. */
  readonly name: string;
}

class Ref implements ImageReference {
  constructor(
    readonly registry: string,
    readonly repository: string,
    readonly tag: string | undefined,
    readonly digest: Digest | undefined,
  ) {}
  get name(): string {
    return `${this.registry}/${this.repository}`;
  }
  private suffix(): string {
    return `${this.tag !== undefined ? `:${this.tag}` : ""}${this.digest !== undefined ? `@${this.digest}` : ""}`;
  }
  toString(): string {
    return `${this.name}${this.suffix()}`;
  }
  get familiar(): string {
    let name = this.name;
    if (this.registry === DOCKER_HUB) {
      name = this.repository.startsWith("library/") && this.repository.split("/").length === 2 ? this.repository.slice(8) : this.repository;
    }
    return `${name}${this.suffix()}`;
  }
  toJSON(): string {
    return this.toString();
  }
}

const TAG_RE = /^[\w][\w.-]{0,127}$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const HOST_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]+)?$`);
const HEX64_RE = /^[a-f0-9]{64}$/;
const MAX_NAME = 255;

function invalid(ref: string, why: string, hint?: string): never {
  throw new OcibuildError("REFERENCE_INVALID", `invalid image reference "${ref}": ${why}`, { hint, details: { reference: ref } });
}

/**
 * Parse and normalise a reference. When neither tag nor digest is given the tag is
 * "latest". A reference may carry both a tag and a digest (the digest wins on pull).
 */
export function parseReference(s: string): ImageReference {
  return parse(s, true);
}

/** Like parseReference but without adding the default "latest" tag. */
export function parseReferenceNoDefault(s: string): ImageReference {
  return parse(s, false);
}

function parse(s: string, defaultTag: boolean): ImageReference {
  if (typeof s !== "string" || s.length === 0) invalid(String(s), "the reference is empty");
  if (s !== s.trim()) invalid(s, "it contains leading or trailing whitespace");
  if (s.includes("://")) invalid(s, "a reference has no URL scheme", `drop the scheme: ${s.slice(s.indexOf("://") + 3)}`);
  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(d);
    } catch (e) {
      invalid(s, `"${d}" is not a valid digest (expected sha256:<64 lowercase hex>)`);
    }
  }
  // A tag is after the last ":" that follows the last "/".
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.indexOf(":", lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) invalid(s, `tag "${tag}" is invalid (allowed: letters, digits, "_", "." and "-", up to 128 characters, not starting with "." or "-")`);
  }
  if (rest === "") invalid(s, "the repository name is empty");
  if (HEX64_RE.test(rest) && tag === undefined && digest === undefined) {
    invalid(s, "a 64-character hexadecimal string cannot be used as a repository name");
  }
  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash >= 0 ? rest.slice(0, slash) : "";
  if (slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost" || first.toLowerCase() !== first)) {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!HOST_RE.test(registry)) invalid(s, `registry host "${registry}" is invalid`);
    const port = /:([0-9]+)$/.exec(registry)?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) invalid(s, `port ${port} is out of range`);
  } else {
    registry = DOCKER_HUB;
    repository = rest;
  }
  registry = canonicalRegistry(registry);
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (repository === "") invalid(s, "the repository name is empty");
  for (const comp of repository.split("/")) {
    if (comp === "") invalid(s, "the repository name has an empty path component");
    if (!PATH_COMPONENT_RE.test(comp)) {
      if (comp.toLowerCase() !== comp && PATH_COMPONENT_RE.test(comp.toLowerCase())) {
        invalid(s, "repository name must be lowercase", `use ${s.replace(comp, comp.toLowerCase())}`);
      }
      invalid(s, `path component "${comp}" is invalid (lowercase letters, digits and single separators "." "_" "__" "-" between them)`);
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME) invalid(s, `the name is longer than ${MAX_NAME} characters`);
  if (defaultTag && tag === undefined && digest === undefined) tag = "latest";
  return new Ref(registry, repository, tag, digest);
}

/** The same repository with `tag` (and no digest). */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) invalid(`${ref.name}:${tag}`, `tag "${tag}" is invalid`);
  return new Ref(ref.registry, ref.repository, tag, undefined);
}

/** The same repository pinned to digest `d` (and no tag). */
export function withDigest(ref: ImageReference, d: Digest): ImageReference {
  return new Ref(ref.registry, ref.repository, undefined, parseDigest(d));
}

/** The same registry, another repository (for cross-repository mounts). */
export function withRepository(ref: ImageReference, repository: string): ImageReference {
  return parse(`${ref.registry}/${repository}`, false);
}
