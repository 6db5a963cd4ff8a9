/**
 * docs/cli.md's table of every build flag is the truth the CLI is held to: each row's
 * example parses (works, alias, no-op) or is refused with a pointer (refused); every
 * flag the CLI parses has a row and every row names flags the CLI parses; and every
 * flag of kaniko's executor and of docker buildx build / docker build has a row.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUILD_SPECS, parseBuildArgs } from "../../src/cli/commands/build-options.js";
import { captureIO } from "../dockerfile/cli-io.js";

/** kaniko's README, "Additional Flags" (its 49 `#### Flag` sections), plus the flags its usage shows elsewhere. */
const KANIKO = [
  "build-arg", "cache", "cache-dir", "cache-repo", "cache-copy-layers", "cache-run-layers", "cache-ttl", "cleanup", "compressed-caching",
  "context-sub-path", "custom-platform", "digest-file", "dockerfile", "force", "git", "image-name-with-digest-file", "image-name-tag-with-digest-file",
  "insecure", "insecure-pull", "insecure-registry", "label", "log-format", "log-timestamp", "no-push", "no-push-cache", "oci-layout-path",
  "push-ignore-immutable-tag-errors", "push-retry", "registry-certificate", "registry-client-cert", "registry-map", "registry-mirror",
  "skip-default-registry-fallback", "reproducible", "single-snapshot", "skip-push-permission-check", "skip-tls-verify", "skip-tls-verify-pull",
  "skip-tls-verify-registry", "skip-unused-stages", "snapshot-mode", "tar-path", "target", "use-new-run", "verbosity", "ignore-var-run",
  "ignore-path", "image-fs-extract-retry", "image-download-retry",
  "context", "destination", "kaniko-dir", "compression", "compression-level",
];

/** docker buildx build's flags (docs/reference/buildx_build.md), then docker build's legacy ones. */
const DOCKER = [
  "add-host", "allow", "annotation", "attest", "build-arg", "build-context", "builder", "cache-from", "cache-to", "call", "cgroup-parent", "check",
  "debug", "file", "iidfile", "label", "load", "metadata-file", "network", "no-cache", "no-cache-filter", "output", "platform", "policy",
  "progress", "provenance", "pull", "push", "quiet", "resource", "sbom", "secret", "shm-size", "ssh", "tag", "target", "ulimit",
  "compress", "cpu-period", "cpu-quota", "cpu-shares", "cpuset-cpus", "cpuset-mems", "disable-content-trust", "force-rm", "isolation",
  "memory", "memory-swap", "rm", "security-opt", "squash",
];

interface Row {
  flags: string[];
  example: string[];
  status: string;
}

async function tableRows(): Promise<Row[]> {
  const doc = await readFile(join(import.meta.dirname, "../../docs/cli.md"), "utf8");
  const start = doc.indexOf("## Every build flag");
  const section = doc.slice(start, doc.indexOf("\n## ", start + 1));
  const rows: Row[] = [];
  for (const line of section.split("\n")) {
    const cells = line.split(" | ").map((c) => c.replace(/^\| ?| ?\|$/g, "").trim());
    if (cells.length < 5 || !cells[0]!.startsWith("`-")) continue;
    rows.push({
      flags: [...cells[0]!.matchAll(/`(--?[a-zA-Z0-9-]+)`/g)].map((m) => m[1]!),
      example: cells[1]!.replace(/^`|`$/g, "").split(" "),
      status: cells[3]!,
    });
  }
  return rows;
}

let work: string;
let rows: Row[];
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-flag-table-"));
  await writeFile(join(work, "Dockerfile"), "FROM scratch\n");
  rows = await tableRows();
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const specNames = () => BUILD_SPECS.flatMap((s) => [...s.names.map((n) => `--${n}`), ...(s.short ?? []).map((n) => `-${n}`)]);

describe("docs/cli.md's flag table", () => {
  it("has a row for every flag the build command parses, and no row for a flag it does not", () => {
    const documented = rows.flatMap((r) => r.flags);
    expect(rows.length).toBeGreaterThan(90);
    expect(specNames().filter((n) => !documented.includes(n))).toEqual([]);
    expect(documented.filter((n) => !specNames().includes(n))).toEqual([]);
  });

  it("has a row for every kaniko executor flag and every docker build / buildx build flag", () => {
    const documented = new Set(rows.flatMap((r) => r.flags));
    expect([...KANIKO, ...DOCKER].filter((f) => !documented.has(`--${f}`))).toEqual([]);
  });

  it("every row's example is accepted, or refused with what to use instead, as its status says", async () => {
    const problems: string[] = [];
    for (const row of rows) {
      expect(["works", "alias", "no-op", "refused"]).toContain(row.status);
      if (!row.example.some((w) => row.flags.some((f) => w === f || w.startsWith(`${f}=`)))) problems.push(`${row.flags[0]}: the example uses none of the row's flags`);
      const args = row.example.includes("--context") ? row.example : [...row.example, "."];
      const cap = captureIO({ cwd: work });
      let error: { code?: string; message?: string } | undefined;
      try {
        await parseBuildArgs(args, cap.io);
      } catch (e) {
        error = e as { code?: string; message?: string };
      }
      if (row.status === "refused") {
        if (error?.code !== "USAGE_UNSUPPORTED_FLAG" || !/is not supported: \S.{10,}/.test(error.message ?? "")) problems.push(`${args.join(" ")}: not refused with a pointer (${error?.code}: ${error?.message})`);
      } else if (error !== undefined) problems.push(`${args.join(" ")}: ${error.code}: ${error.message}`);
    }
    expect(problems).toEqual([]);
  });
});
