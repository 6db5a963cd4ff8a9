/**
 * ocibuild: a daemonless OCI image builder and registry client.
 *
 * Everything the CLI does is available here as a typed API:
 *
 * ```ts
 * import { build, buildEvents, run, copy, inspect, parseDockerfile, expandWord } from "ocibuild";
 * ```
 *
 * The options mirror the CLI flags (see docs/library.md for the mapping), every
 * call takes an `AbortSignal`, and a build's events are the same objects
 * `--progress=json` prints, as an `onEvent` callback or an async iterator.
 */

export { OcibuildError, isOcibuildError, ExitCode } from "./errors.js";
export type { ErrorLocation, OcibuildErrorOptions } from "./errors.js";
export { ERROR_CODES, errorCodeInfo } from "./error-codes.js";
export type { ErrorCode, ErrorCodeInfo } from "./error-codes.js";
export { VERSION } from "./version.js";
export * from "./oci/digest.js";
export * from "./oci/media-types.js";
export * from "./oci/manifest.js";
export { parseReference } from "./oci/reference.js";
export { parsePlatform, parsePlatformList, formatPlatform, normalizePlatform, platformMatches, hostPlatform } from "./oci/platform.js";
export type { ImageReference } from "./oci/reference.js";
export { parseDockerfile, expandWord, expandWords, planStages, parseDockerignore, createIgnoreMatcher, dumpAst } from "./dockerfile/index.js";
export type { ParseResult, ParseWarning, ParseOptions, ExpandOptions, StagePlan, Stage, StagePlanOptions, Instruction } from "./dockerfile/index.js";
export { validateEvent, isBuildEvent, EVENT_SCHEMAS } from "./builder/events.js";
export type { BuildEvent, BuildEventType, EventSink } from "./builder/events.js";
export type { BuildOutput } from "./builder/output.js";
export type { LayerCompression } from "./oci/layer-compression.js";
export type { BuildResult, StepReport } from "./builder/build.js";
export type { RegistryOptions, ProgressEvent } from "./oci/registry/index.js";
export type { CopyOptions, CopyResult, InspectOptions, InspectResult } from "./oci/copy.js";

export { build, buildEvents, copy, inspect, run, verify } from "./api.js";
export type { BuildOptions, BuildWithEvents, RunOptions, RunOutcome, VerifyOptions, VerifyResult } from "./api.js";
export { parseAnnotation, type Annotation, type AnnotationLevel } from "./oci/annotations.js";
export type { AttestOptions } from "./builder/attest.js";
export type { AttestationRecord, SignatureRecord, SignOptions } from "./builder/finish.js";
export type { HealthReport } from "./run/healthcheck.js";
export type { RunMount, SandboxControl } from "./builder/sandbox/index.js";

export { BuildkitExecutor } from "./builder/sandbox/buildkit.js";
export type { BuildkitExecutorOptions, DaemonInfo, RemoteMount } from "./builder/sandbox/buildkit.js";
export { BwrapExecutor } from "./builder/sandbox/bwrap.js";
export type { Executor, RunStepSpec, RunStepResult, RunSpec, RunResult } from "./builder/sandbox/index.js";
export { setupBinfmt, emulationStatus } from "./builder/emulation.js";
