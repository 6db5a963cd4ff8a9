export { RegistryClient, MAX_MANIFEST_BYTES } from "./client.js";
export type { RegistryOptions, RetryOptions, ProgressEvent, RetryEvent, Scope } from "./types.js";
export { isLoopbackHost } from "./transport.js";
export type { BlobOpener } from "./upload.js";
export { pushArtifact, type PushOptions, type PushResult, type BlobOutcome } from "./push.js";
