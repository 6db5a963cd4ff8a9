/**
 * Stage graphs and ARG/FROM scoping: golden scenarios under
 * testdata/dockerfile/stages/<case> (Dockerfile + scenarios.json), plus a few
 * direct checks of what a partial match cannot express.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { PROXY_ARGS, parseDockerfile, planStages, platformArgs } from "../../src/dockerfile/index.js";
import type { StagePlanOptions } from "../../src/dockerfile/index.js";
import { REPO_ROOT } from "./conformance-dir.js";

interface Scenario {
  name: string;
  options: StagePlanOptions;
  expect?: { stages?: Record<string, unknown>[]; warnings?: { code: string; line?: number }[] } & Record<string, unknown>;
  error?: { code: string; line?: number; hint?: string };
}

const base = join(REPO_ROOT, "testdata/dockerfile/stages");
const cases = readdirSync(base).sort();
const amd64 = { os: "linux", architecture: "amd64" };

describe("stage planning goldens", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(4));
  describe.each(cases)("%s", (name) => {
    const dir = join(base, name);
    const text = readFileSync(join(dir, "Dockerfile"), "utf8");
    const scenarios = JSON.parse(readFileSync(join(dir, "scenarios.json"), "utf8")) as Scenario[];
    it.each(scenarios.map((s) => ({ ...s, title: s.name })))("$title", (s) => {
      const parsed = parseDockerfile(text);
      if (s.error !== undefined) {
        let thrown: unknown;
        try {
          planStages(parsed, s.options);
        } catch (e) {
          thrown = e;
        }
        expect(isOcibuildError(thrown), String(thrown)).toBe(true);
        if (!isOcibuildError(thrown)) return;
        expect(thrown.code).toBe(s.error.code);
        if (s.error.line !== undefined) {
          expect(thrown.line).toBe(s.error.line);
          expect(thrown.message.startsWith(`Dockerfile:${s.error.line}: `)).toBe(true);
          expect(thrown.snippet).toBe(parsed.lines[s.error.line - 1]);
        }
        if (s.error.hint !== undefined) expect(thrown.hint).toBe(s.error.hint);
        return;
      }
      const plan = planStages(parsed, s.options);
      const { stages, warnings, ...rest } = s.expect ?? {};
      expect(plan).toMatchObject(rest);
      (stages ?? []).forEach((st, i) => expect(plan.stages[i]).toMatchObject(st));
      if (warnings !== undefined) expect(plan.warnings.map((w) => ({ code: w.code, line: w.line }))).toEqual(warnings);
    });
  });
});

describe("ARG scoping details", () => {
  it("an ARG with no value and no build arg stays unset", () => {
    const parsed = parseDockerfile("ARG A\nARG B=${A:-fallback}\nFROM x${A}y\n");
    const plan = planStages(parsed, { buildPlatform: amd64, targetPlatform: amd64 });
    expect(Object.hasOwn(plan.stages[0]!.globalArgs, "A")).toBe(false);
    expect(plan.stages[0]!.globalArgs.B).toBe("fallback");
    expect(plan.stages[0]!.base).toBe("xy");
  });

  it("a later global ARG sees earlier ones and build args win over defaults", () => {
    const parsed = parseDockerfile("ARG A=1\nARG B=$A-$A\nFROM img:$B\n");
    expect(planStages(parsed, { buildPlatform: amd64, targetPlatform: amd64 }).stages[0]!.base).toBe("img:1-1");
    expect(planStages(parsed, { buildArgs: { A: "2" }, buildPlatform: amd64, targetPlatform: amd64 }).stages[0]!.base).toBe("img:2-2");
    expect(planStages(parsed, { buildArgs: { B: "z" }, buildPlatform: amd64, targetPlatform: amd64 }).stages[0]!.base).toBe("img:z");
  });

  it("ARGs declared inside a reachable stage consume build args; proxy args never count as unused", () => {
    const parsed = parseDockerfile("FROM a AS one\nARG IN_ONE\nFROM b\nARG IN_TWO\n");
    const plan = planStages(parsed, {
      buildArgs: { IN_ONE: "1", IN_TWO: "2", [PROXY_ARGS[0]!]: "http://p", no_proxy: "x" },
      buildPlatform: amd64,
      targetPlatform: amd64,
    });
    // stage one is unreachable from the default target, so IN_ONE is not consumed
    expect(plan.order).toEqual([1]);
    expect(plan.unusedBuildArgs).toEqual(["IN_ONE"]);
  });

  it("platformArgs formats os/arch/variant", () => {
    expect(platformArgs(amd64, { os: "linux", architecture: "arm", variant: "v7" })).toEqual({
      BUILDPLATFORM: "linux/amd64",
      BUILDOS: "linux",
      BUILDARCH: "amd64",
      BUILDVARIANT: "",
      TARGETPLATFORM: "linux/arm/v7",
      TARGETOS: "linux",
      TARGETARCH: "arm",
      TARGETVARIANT: "v7",
    });
  });

  it("a Dockerfile with only ARGs has no stages", () => {
    const parsed = parseDockerfile("ARG A=1\n");
    expect(() => planStages(parsed, { buildPlatform: amd64, targetPlatform: amd64 })).toThrow(
      expect.objectContaining({ code: "DOCKERFILE_NO_STAGE" }),
    );
  });

  it("an expansion error in FROM names the line", () => {
    const parsed = parseDockerfile("FROM alpine\nRUN true\nFROM ${X:?required}\n");
    expect(() => planStages(parsed, { buildPlatform: amd64, targetPlatform: amd64 })).toThrow(
      expect.objectContaining({ code: "DOCKERFILE_EXPANSION", line: 3 }),
    );
  });
});
