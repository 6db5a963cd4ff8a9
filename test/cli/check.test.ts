/**
 * `ocibuild build --call check` (and `--check`): BuildKit's build checks over the
 * Dockerfile, printed as buildx prints them, without building anything.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runChecks } from "../../src/dockerfile/checks.js";
import { parseDockerfile } from "../../src/dockerfile/parse.js";
import { main } from "../../src/cli/main.js";
import { captureIO } from "../dockerfile/cli-io.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-check-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const rules = (text: string) => runChecks(parseDockerfile(text)).warnings.map((w) => `${w.line} ${w.rule}: ${w.detail}`);

describe("the build checks, rule by rule (BuildKit's names and messages)", () => {
  it("stage naming: FromAsCasing, StageNameCasing, DuplicateStageName, ReservedStageName", () => {
    expect(rules("FROM alpine as Build\nFROM alpine AS build\nFROM alpine AS scratch\n")).toEqual([
      "1 FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
      "1 StageNameCasing: Stage name 'Build' should be lowercase",
      "2 DuplicateStageName: Duplicate stage name \"build\", stage names should be unique",
      "3 ReservedStageName: Stage name should not use the same name as reserved stage \"scratch\"",
    ]);
  });

  it("JSONArgsRecommended, MaintainerDeprecated, MultipleInstructionsDisallowed", () => {
    expect(rules('FROM alpine\nMAINTAINER me\nCMD ["a"]\nCMD echo hi\nENTRYPOINT ["x"]\n')).toEqual([
      "2 MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label",
      "3 MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used",
      "4 JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
    ]);
  });

  it("ConsistentInstructionCasing, WorkdirRelativePath, LegacyKeyValueFormat, SecretsUsedInArgOrEnv, Expose rules", () => {
    expect(rules("FROM alpine\nworkdir app\nWORKDIR /srv\nWORKDIR sub\nENV A b\nARG API_TOKEN\nARG PUBLIC_KEY\nEXPOSE 80:80 53/UDP\n")).toEqual([
      "2 ConsistentInstructionCasing: Command 'workdir' should match the case of the command majority (uppercase)",
      '2 WorkdirRelativePath: Relative workdir "app" can have unexpected results if the base image changes',
      '5 LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format',
      '6 SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG "API_TOKEN")',
      "8 ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '80:80'",
      "8 ExposeProtoCasing: Defined protocol '53/UDP' in EXPOSE instruction should be lowercase",
    ]);
  });

  it("NoEmptyContinuation, and a clean Dockerfile has no warnings", () => {
    expect(rules("FROM alpine\nRUN echo a \\\n\n  b\n")).toEqual(["2 NoEmptyContinuation: Empty continuation line"]);
    expect(rules('FROM alpine AS build\nWORKDIR /src\nENV A=b\nCMD ["sh"]\n')).toEqual([]);
  });

  it("# check=skip=RULE,... and skip=all leave rules out", () => {
    expect(rules("# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM alpine\nMAINTAINER x\nCMD a\nENV A b\n")).toEqual([
      '5 LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format',
    ]);
    expect(rules("# check=skip=all\nFROM alpine\nCMD a\n")).toEqual([]);
  });
});

describe("ocibuild build --call check", () => {
  async function check(dockerfile: string, flags: string[]) {
    const ctx = join(work, `ctx-${Math.random().toString(36).slice(2)}`);
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), dockerfile);
    const cap = captureIO({ cwd: work });
    // A registry nobody answers: the check must not pull or push anything.
    const code = await main(["build", ...flags, "-t", "registry.invalid/app:1", ctx], cap.io);
    return { code, stdout: cap.stdout(), stderr: cap.stderr() };
  }

  it("prints buildx's report with the rule, its URL, the detail and the line, and exits 0", async () => {
    const r = await check("FROM registry.invalid/base as Build\nCMD echo hi\n", ["--call", "check"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^Check complete, 3 warnings have been found!\n/);
    expect(r.stdout).toContain(
      "\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\nJSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\nDockerfile:2\n--------------------\n   1 |     FROM registry.invalid/base as Build\n   2 | >>> CMD echo hi\n--------------------\n",
    );
    expect(r.stdout).toContain("WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n");
    expect(r.stdout).toContain("WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n");
  });

  it("--check is --call check; a clean Dockerfile says so", async () => {
    const r = await check('FROM registry.invalid/base\nCMD ["sh"]\n', ["--check"]);
    expect([r.code, r.stdout]).toEqual([0, "Check complete, no warnings found.\n"]);
  });

  it("# check=error=true (or BUILDKIT_DOCKERFILE_CHECK) makes warnings fail with exit 1", async () => {
    const r = await check("# check=error=true\nFROM registry.invalid/base\nCMD echo hi\n", ["--call=check"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[BUILD_CHECK_FAILED\]: lint violation found for rules: JSONArgsRecommended/m);
    const arg = await check("FROM registry.invalid/base\nCMD echo hi\n", ["--call=check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=true"]);
    expect(arg.code).toBe(1);
  });

  it("--call outline and targets are refused with a pointer", async () => {
    const r = await check("FROM registry.invalid/base\n", ["--call", "targets"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/flag --call=targets is not supported: ocibuild parse/);
  });
});
