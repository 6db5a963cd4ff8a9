/** Where buildkitd listens by default (BuildKit's own default socket). Kept apart so the CLI can name it without loading gRPC. */
export const DEFAULT_BUILDKIT_ADDRESS = "unix:///run/buildkit/buildkitd.sock";
