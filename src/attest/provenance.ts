/**
 * SLSA provenance for a built image, from what the build already knows: the
 * Dockerfile's digest, the build arguments (secret-looking values redacted), the
 * target and platforms, every base image by digest and every ADD URL or git source
 * with its checksum (the materials), and with `mode: "max"` each step with its cache
 * key and whether it was cached. `--secret` values are never inputs here (only their
 * ids are), and nothing takes the wall clock when SOURCE_DATE_EPOCH is set, so the
 * statement is reproducible.
 *
 * Predicates: SLSA v1 (`https://slsa.dev/provenance/v1`, the default) and v0.2
 * (BuildKit 0.11's), laid out as BuildKit lays them out.
 */
import { createHash } from "node:crypto";
import { Redactor } from "../cache/redact.js";
import { encodeStatement, type EncodedStatement, type Subject } from "./statement.js";

export const SLSA_V1 = "https://slsa.dev/provenance/v1";
export const SLSA_V02 = "https://slsa.dev/provenance/v0.2";
export const BUILD_TYPE = "https://ocibuild.dev/build-types/dockerfile@v1";
export const BUILDER_ID = "https://ocibuild.dev/ocibuild";

export type ProvenanceMode = "min" | "max";
export type ProvenanceVersion = "v1" | "v0.2";

/** A material: a base image (`pkg:docker/...`), an ADD URL, a git repository. */
export interface Material {
  readonly uri: string;
  readonly digest: Readonly<Record<string, string>>;
}

export interface ProvenanceStep {
  readonly stage: string;
  readonly instruction: string;
  readonly line: number;
  readonly cacheKey?: string;
  readonly cached: boolean;
}

export interface ProvenanceInput {
  readonly builderVersion: string;
  readonly dockerfile: { readonly name: string; readonly sha256: string };
  /** Where the context came from, when it is not a local directory (a git URL, a tar). */
  readonly context?: { readonly uri: string; readonly digest: Readonly<Record<string, string>> };
  readonly buildArgs: Readonly<Record<string, string>>;
  readonly target?: string;
  readonly platforms: readonly string[];
  /** The build's other options worth recording (labels, no-cache, network...), already free of secrets. */
  readonly options?: Readonly<Record<string, unknown>>;
  /** Ids of the secrets and ssh agents offered to RUN (never their values). */
  readonly secretIds?: readonly string[];
  readonly sshIds?: readonly string[];
  readonly materials: readonly Material[];
  readonly steps?: readonly ProvenanceStep[];
  readonly sourceDateEpoch?: number;
  readonly startedOn?: Date;
  readonly finishedOn?: Date;
  /** The host's platform, where the build ran. */
  readonly builderPlatform: string;
}

const REDACTED = "[redacted]";

function redactedArgs(args: Readonly<Record<string, string>>): Record<string, string> {
  const names = new Set(new Redactor(args).names);
  return Object.fromEntries(Object.entries(args).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [`build-arg:${k}`, names.has(k) ? REDACTED : v]));
}

/**
 * The request as BuildKit records it: with mode "min", only what is not a build
 * argument, label, secret or ssh id (BuildKit's min mode leaves those out too).
 */
function requestParameters(input: ProvenanceInput, mode: ProvenanceMode): Record<string, unknown> {
  const max = mode === "max";
  const args: Record<string, unknown> = { ...(max ? redactedArgs(input.buildArgs) : {}), filename: input.dockerfile.name };
  if (input.target) args.target = input.target;
  if (input.platforms.length) args.platform = input.platforms.join(",");
  return {
    frontend: "dockerfile.v0",
    args,
    ...(max && input.options && Object.keys(input.options).length ? { options: input.options } : {}),
    ...(max && input.secretIds?.length ? { secrets: input.secretIds.map((id) => ({ id })) } : {}),
    ...(max && input.sshIds?.length ? { ssh: input.sshIds.map((id) => ({ id })) } : {}),
    locals: input.context ? [] : [{ name: "context" }, { name: "dockerfile" }],
  };
}

function times(input: ProvenanceInput): { startedOn?: string; finishedOn?: string } {
  const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
  if (input.sourceDateEpoch !== undefined) {
    const t = iso(new Date(input.sourceDateEpoch * 1000));
    return { startedOn: t, finishedOn: t };
  }
  return { ...(input.startedOn ? { startedOn: iso(input.startedOn) } : {}), ...(input.finishedOn ? { finishedOn: iso(input.finishedOn) } : {}) };
}

/** A stable id for this invocation, shared by its platforms: the hash of what it was asked to do (no clock, no randomness). */
function invocationId(input: ProvenanceInput): string {
  const h = createHash("sha256").update(JSON.stringify([input.dockerfile.sha256, requestParameters(input, "max"), input.context?.uri ?? null]));
  return h.digest("hex").slice(0, 32);
}

function buildConfig(input: ProvenanceInput): Record<string, unknown> | undefined {
  if (!input.steps) return undefined;
  return {
    steps: input.steps.map((s) => ({ stage: s.stage, instruction: s.instruction, line: s.line, ...(s.cacheKey ? { cacheKey: s.cacheKey } : {}), cached: s.cached })),
  };
}

function configSource(input: ProvenanceInput): Record<string, unknown> {
  // A remote context (git) is the config's source, by its commit; a local one is named by the Dockerfile's digest.
  return input.context ? { uri: input.context.uri, digest: input.context.digest, entryPoint: input.dockerfile.name } : { digest: { sha256: input.dockerfile.sha256 }, entryPoint: input.dockerfile.name };
}

/** The materials, the remote context first (BuildKit lists the git repository among them). */
function materialsOf(input: ProvenanceInput): Material[] {
  return [...(input.context ? [{ uri: input.context.uri, digest: input.context.digest }] : []), ...input.materials].map((m) => ({ uri: m.uri, digest: m.digest }));
}

function predicateV1(input: ProvenanceInput, mode: ProvenanceMode): Record<string, unknown> {
  const config = mode === "max" ? buildConfig(input) : undefined;
  return {
    buildDefinition: {
      buildType: BUILD_TYPE,
      externalParameters: { configSource: configSource(input), request: requestParameters(input, mode) },
      internalParameters: { ...(config ? { buildConfig: config } : {}), builderPlatform: input.builderPlatform },
      resolvedDependencies: materialsOf(input),
    },
    runDetails: {
      builder: { id: BUILDER_ID, version: { ocibuild: input.builderVersion } },
      metadata: {
        invocationID: invocationId(input),
        ...times(input),
        ocibuild_completeness: { request: mode === "max", resolvedDependencies: input.context !== undefined },
        ocibuild_mode: mode,
      },
    },
  };
}

function predicateV02(input: ProvenanceInput, mode: ProvenanceMode): Record<string, unknown> {
  const config = mode === "max" ? buildConfig(input) : undefined;
  const t = times(input);
  return {
    builder: { id: BUILDER_ID },
    buildType: BUILD_TYPE,
    materials: materialsOf(input),
    invocation: { configSource: configSource(input), parameters: requestParameters(input, mode), environment: { platform: input.builderPlatform } },
    ...(config ? { buildConfig: config } : {}),
    metadata: {
      buildInvocationID: invocationId(input),
      ...(t.startedOn ? { buildStartedOn: t.startedOn } : {}),
      ...(t.finishedOn ? { buildFinishedOn: t.finishedOn } : {}),
      completeness: { parameters: mode === "max", environment: true, materials: input.context !== undefined },
      reproducible: false,
      "https://ocibuild.dev/provenance#metadata": { version: input.builderVersion, mode },
    },
  };
}

export function provenanceStatement(subject: readonly Subject[], input: ProvenanceInput, opts: { mode: ProvenanceMode; version: ProvenanceVersion }): EncodedStatement {
  return opts.version === "v1"
    ? encodeStatement(SLSA_V1, subject, predicateV1(input, opts.mode))
    : encodeStatement(SLSA_V02, subject, predicateV02(input, opts.mode));
}
