/**
 * ocibuild: a daemonless OCI image builder and registry client.
 * Everything the CLI does is available here as a typed API.
 */
export { OcibuildError, isOcibuildError, ExitCode } from "./errors.js";
export type { ErrorLocation, OcibuildErrorOptions } from "./errors.js";
export { VERSION } from "./version.js";
export * from "./oci/digest.js";
export * from "./oci/media-types.js";
export * from "./oci/manifest.js";
