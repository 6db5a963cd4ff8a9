/**
 * How stages are scheduled (as BuildKit does): a stage starts once its base is
 * ready, its steps run while a stage it reads with COPY --from is still
 * building, and the step that reads it waits for it, holding no slot of the
 * core limit (maxParallelism). Real builds in bubblewrap on the busybox base.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { build, isOcibuildError, type BuildEvent, type BuildOptions } from "../../src/index.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot } from "../helpers/tools.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";

const ready = isRoot && haveRegistry() && have("bwrap");

type StepEvent = Extract<BuildEvent, { type: "step-start" | "step-end" }>;

describe.skipIf(!ready)("stage scheduling: steps before a COPY --from overlap its source stage (needs root, bwrap, docker-registry)", () => {
  const f = useBusyboxRegistry("stage-schedule");

  /** Builds `dockerfile` (FROM BASE stages) in a fresh context and cache; the step events in order, and the result or the error. */
  async function buildSteps(name: string, dockerfile: string, extra: Partial<BuildOptions> = {}): Promise<{ events: StepEvent[]; error?: unknown }> {
    const context = join(f.work, name);
    await mkdir(context, { recursive: true });
    await writeFile(join(context, "Dockerfile"), `ARG BASE\n${dockerfile}`);
    const events: StepEvent[] = [];
    const onEvent = (e: BuildEvent) => {
      if (e.type === "step-start" || e.type === "step-end") events.push(e);
    };
    try {
      await build({ context, push: false, cacheDir: join(f.work, `cache-${name}`), buildArgs: { BASE: f.base }, onEvent, ...extra });
      return { events };
    } catch (error) {
      return { events, error };
    }
  }
  const at = (events: StepEvent[], type: StepEvent["type"], instruction: string) => events.findIndex((e) => e.type === type && e.instruction === instruction);

  it("a stage's RUN before its COPY --from starts while the source stage's slow RUN is still running", async () => {
    const { events, error } = await buildSteps(
      "overlap",
      "FROM ${BASE} AS src\nRUN sleep 2 && echo made > /made\nFROM ${BASE}\nRUN echo early > /early\nCOPY --from=src /made /made\n",
      { maxParallelism: 2 },
    );
    expect(error).toBeUndefined();
    const srcEnd = at(events, "step-end", "RUN sleep 2 && echo made > /made");
    expect(srcEnd).toBeGreaterThanOrEqual(0);
    expect(at(events, "step-start", "RUN echo early > /early")).toBeLessThan(srcEnd);
    // The COPY waits for its source: it starts after the source's RUN ended.
    expect(at(events, "step-start", "COPY --from=src /made /made")).toBeGreaterThan(srcEnd);
    // Each stage's steps start in order and end in order, each after its start (the next
    // step may start before a step's end: see layer-overlap.test.ts).
    for (const stage of new Set(events.map((e) => e.stage))) {
      const mine = events.filter((e) => e.stage === stage && !e.instruction.startsWith("FROM "));
      const starts = mine.filter((e) => e.type === "step-start").map((e) => e.step);
      expect(starts).toEqual([...starts].sort((a, b) => a - b));
      expect(mine.filter((e) => e.type === "step-end").map((e) => e.step)).toEqual(starts);
      for (const [i, e] of mine.entries()) if (e.type === "step-end") expect(mine.findIndex((x) => x.type === "step-start" && x.step === e.step)).toBeLessThan(i);
    }
  }, 60_000);

  it("maxParallelism 1 and a chain of COPY --from: no deadlock, never two steps at once", async () => {
    const dockerfile = [
      "FROM ${BASE} AS a",
      "RUN echo a > /a",
      "FROM ${BASE} AS b",
      "RUN echo b0 > /b0",
      "COPY --from=a /a /a",
      "RUN cat /a > /b",
      "FROM ${BASE} AS c",
      "RUN echo c0 > /c0",
      "COPY --from=b /b /b",
      "RUN --mount=type=bind,from=a,target=/mnt cat /mnt/a /b > /c",
      "FROM ${BASE}",
      "RUN echo final > /final",
      "COPY --from=c /c /c",
      "COPY --from=a /a /a",
      "",
    ].join("\n");
    const { events, error } = await buildSteps("chain", dockerfile, { maxParallelism: 1 });
    expect(error).toBeUndefined();
    expect(events.filter((e) => e.type === "step-end" && !e.instruction.startsWith("FROM ")).length).toBe(10);
    // A step runs from its step-start to its step-end, or to the next step-start of its
    // stage when that comes first: from then on only its layer's blob is being compressed,
    // which holds no slot (the next step of the stage starts once the layer is hashed).
    const running = new Map<string, number>();
    for (const e of events.filter((x) => !x.instruction.startsWith("FROM "))) {
      if (e.type === "step-start") running.set(e.stage, e.step);
      else if (running.get(e.stage) === e.step) running.delete(e.stage);
      expect(running.size).toBeLessThanOrEqual(1);
    }
    expect(at(events, "step-start", "COPY --from=c /c /c")).toBeGreaterThan(at(events, "step-end", "RUN --mount=type=bind,from=a,target=/mnt cat /mnt/a /b > /c"));
  }, 60_000);

  it("a failing source stage fails the build with its own error; its consumer's running RUN is stopped, and nothing after it starts", async () => {
    const { events, error } = await buildSteps("fail", "FROM ${BASE} AS bad\nRUN sleep 1 && exit 3\nFROM ${BASE}\nRUN sleep 6\nCOPY --from=bad / /x\nRUN echo after > /after\n");
    expect(isOcibuildError(error) && error.code).toBe("BUILD_RUN_FAILED");
    expect(isOcibuildError(error) && error.line).toBe(3);
    expect((error as Error).message).toContain("exit code 3");
    // The consumer's RUN had started before the source failed, and was stopped (as BuildKit cancels the rest of a failed solve).
    expect(at(events, "step-start", "RUN sleep 6")).toBeGreaterThanOrEqual(0);
    expect(at(events, "step-end", "RUN sleep 6")).toBe(-1);
    expect(at(events, "step-start", "COPY --from=bad / /x")).toBe(-1);
    expect(at(events, "step-start", "RUN echo after > /after")).toBe(-1);
  }, 60_000);

  it("maxParallelism that is not a whole number of at least 1 is refused, naming the option", async () => {
    for (const bad of [0, 1.5]) {
      const { error, events } = await buildSteps(`bad-${bad}`, "FROM ${BASE}\nRUN true\n", { maxParallelism: bad });
      expect(isOcibuildError(error) && error.code).toBe("USAGE_BAD_VALUE");
      expect((error as Error).message).toContain(`the maxParallelism option ("${bad}")`);
      expect(events).toEqual([]);
    }
  });
});
