import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites start real registries and sandboxes; two cores: keep the fan-out small.
    maxWorkers: 2,
    pool: "forks",
  },
});
