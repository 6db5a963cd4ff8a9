/**
 * The cache key, report text and miss reason of every instruction kind, through the
 * cache wrapper (cachedStep) as a stage runs it, in a dry run (nothing is executed,
 * so the keys do not depend on this host's layers). The keys are golden: a change to
 * what goes into a key, or how, that does not bump KEY_VERSION would let an old
 * entry be reused for other inputs, or make every cached build rebuild.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileHasher } from "../../src/cache/file-hash.js";
import { KEY_VERSION } from "../../src/cache/key.js";
import { Redactor } from "../../src/cache/redact.js";
import { INSTRUCTION_NAMES, parseDockerfile, planStages, type Instruction } from "../../src/dockerfile/index.js";
import { OciLayout } from "../../src/oci/layout.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { CacheMounts } from "../../src/builder/cache-mounts.js";
import { cachedStep, type CacheContext } from "../../src/builder/cached-step.js";
import { LayerStore } from "../../src/builder/fs/layer-store.js";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import { emptyState, type StageState } from "../../src/builder/stage-state.js";
import type { StepContext } from "../../src/builder/step-context.js";

const DOCKERFILE = `ARG GLOBAL=g
FROM scratch AS build
FROM scratch
ARG VERSION=1.0
ARG API_TOKEN
ENV APP=/app EXTRA=$VERSION
LABEL org.example.version=$VERSION
WORKDIR /app
COPY a.txt dir/ ./
COPY --chmod=0755 <<EOF /bin/hello
#!/bin/sh
echo $VERSION
EOF
COPY --link a.txt /linked/
COPY --from=build /out /from-build/
ADD --chown=1:1 a.txt /added/
RUN --mount=type=bind,source=dir,target=/mnt echo $VERSION $API_TOKEN
RUN --network=none ["/bin/true"]
USER 1000:1000
EXPOSE 8080/tcp 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s CMD ["/bin/true"]
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo child
MAINTAINER someone
CMD ["/bin/hello"]
ENTRYPOINT ["/bin/sh"]
`;

// [instruction as reported, key, miss reason], computed with KEY_VERSION 4.
const GOLDEN: [string, string, string][] = [
  ["ARG VERSION=1.0","d85186c4de26a9d754b92b453801cffc34a2051385183d3edb6f7567b72b1c27","no previous entry"],
  ["ARG API_TOKEN=s3cret-value","a218df6020c185fbe9fbaaefce11b48be7db9f8c2af4d719900dbbfee0b78255","no previous entry"],
  ["ENV APP=/app EXTRA=1.0","81ac71d2a1b193445b2426bbb258f5f380acc2d17aaeab338f70fd6aa2021565","no previous entry"],
  ["LABEL org.example.version=1.0","34a68e9fe5575c336e6d892763296e7aead9dd0c54c521e59d7fe9f4d09fd895","no previous entry"],
  ["WORKDIR /app","c715b6b7fd26c343f59f59459a6300f4b003bc587b02769ceb20414207d6775c","no previous entry"],
  ["COPY a.txt dir/ ./","5c65c86a97aaf84eef418e2e4c135d9ca1c71a93d5ad98a6e7dd8dcc924fc649","parent step rebuilt"],
  ["COPY --chmod=0755 /bin/hello","218a9e6ad6e29eb6a97c81c89d9cd4ebb0541f885c348b4debe960026b3e708e","parent step rebuilt"],
  ["COPY --link a.txt /linked/","e3e2f46310aad764426925780a7e703ab1da4b34e0376d0707c57508ac75cfea","parent step rebuilt"],
  ["COPY --from=build /out /from-build/","6fc607ff88c04803f8f096dd2fc0dd5360e8bc27a5a688996072dd8d75b33de2","parent step rebuilt"],
  ["ADD --chown=1:1 a.txt /added/","12b487aef19a2ba5fbe29e787128f3c7c474a882b5df36a3bf0f07532c8c9a44","parent step rebuilt"],
  ["RUN echo $VERSION $API_TOKEN","904d0039dd449ac7d31ab30928b49ff32c545d0229ec5bb09661d1d0086bc3e5","parent step rebuilt"],
  ["RUN [\"/bin/true\"]","9a56f48c7462ecf221d5078c6e009a16662ae34ea31aba2d00207e5ba8b89b90","parent step rebuilt"],
  ["USER 1000:1000","37daa0e1c6922c89af4b4249f61f246aa31ce70e0eaa18448657fb4e8543160d","no previous entry"],
  ["EXPOSE 8080/tcp 53/udp","29b0d6cfbd9cd37b5373791d3f58abfa0a11cc8925b2a16929adcc416569492c","no previous entry"],
  ["VOLUME [/data]","5ad352aa58c5d4684595bac36a0da166bd4b5e1cb73edfbbf88af21d1fa072d1","no previous entry"],
  ["STOPSIGNAL SIGTERM","dbfe4cc42155c90f23242372efa6425db9454746b0f61b0752bbfb068802a5c6","no previous entry"],
  ["HEALTHCHECK [\"CMD\",\"/bin/true\"]","a8637b92c058188e2cd968deff3067d9098a347ced4f2a9279fc0501f683212e","no previous entry"],
  ["SHELL [\"/bin/sh\",\"-ec\"]","fed50d549ff0f70b250b264e84f863d23448c2c9c143c1a3009e0c48afe405ce","no previous entry"],
  ["ONBUILD RUN echo child","1441fac00b5e49b05e743260a27f8052bd4c94bb4ea5df4081f21f6c09200cc6","no previous entry"],
  ["MAINTAINER someone","6163b8cba79fc088e70a7df26eab2577bf9a47ba811b095709eb5d7b3142b555","no previous entry"],
  ["CMD [\"/bin/hello\"]","4ec248f53224f7a926a50de853ae9dea61edc49ec9a3d97a8482afd66b074215","no previous entry"],
  ["ENTRYPOINT [\"/bin/sh\"]","771d5e938505eb964a65380e66fbda91ffd147aaac30f07a41fdc823929609ec","no previous entry"],
];

let dir: string;
let context: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ocibuild-step-keys-"));
  context = join(dir, "context");
  await mkdir(join(context, "dir"), { recursive: true });
  await writeFile(join(context, "a.txt"), "hello\n");
  await writeFile(join(context, "dir", "b.txt"), "b\n");
  await chmod(join(context, "a.txt"), 0o644);
  await chmod(join(context, "dir", "b.txt"), 0o600);
  await chmod(join(context, "dir"), 0o755);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function stepContext(lines: readonly string[]): Promise<Omit<StepContext, "current">> {
  return {
    file: "Dockerfile",
    lines,
    escapeToken: "\\",
    content: await OciLayout.create(join(dir, "content")),
    layerStore: new LayerStore(join(dir, "rootfs")),
    scratchDir: join(dir, "scratch"),
    gitCacheDir: join(dir, "git"),
    cacheMounts: new CacheMounts(join(dir, "mounts")),
    secrets: new Map(),
    sshAgents: new Map(),
    allow: new Set(),
    defaultNetwork: "default",
    context: { root: context, label: "the build context" },
    registry: new RegistryClient({ env: {} }),
    executor: new BwrapExecutor(),
    stage: () => undefined,
    image: () => Promise.reject(new Error("no image in this test")),
    emit: () => {},
  };
}

describe("cache keys of every instruction kind", () => {
  it(`stay what they were for KEY_VERSION ${KEY_VERSION}, with the report text and miss reason`, async () => {
    const buildArgs = { API_TOKEN: "s3cret-value" };
    const parsed = parseDockerfile(DOCKERFILE);
    const platform = { os: "linux", architecture: "amd64" };
    const plan = planStages(parsed, { buildArgs, buildPlatform: platform, targetPlatform: platform });
    const stage = plan.stages[plan.target]!;
    const ctx = await stepContext(parsed.lines);
    const cache: CacheContext = {
      stores: [],
      noLookup: false,
      noWrite: true,
      dryRun: true,
      hashFile: (path, st) => new FileHasher().hashFile(path, st),
      stageChain: (n) => (n === "build" ? Promise.resolve("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") : undefined),
      redactor: new Redactor(buildArgs),
    };
    let state: StageState = emptyState(platform);
    let prevKey = "scratch";
    let unknown = false;
    const seen: [string, string, string][] = [];
    const kinds = new Set<Instruction["kind"]>();
    for (const [i, instr] of stage.instructions.entries()) {
      kinds.add(instr.kind);
      const out = await cachedStep(state, instr, { ...ctx, current: { stage: "1", step: i + 1, instruction: instr } }, cache, {
        args: { buildArgs, globalArgs: stage.globalArgs, escapeToken: "\\" },
        step: i + 1,
        slot: `slot-${i}`,
        prevKey,
        base: "scratch",
        parentUnknown: unknown,
      });
      expect(out.cached).toBe(false);
      seen.push([out.instruction, out.key, out.reason ?? ""]);
      state = out.state;
      prevKey = out.key;
      if (out.unknown) unknown = true;
    }
    // Every instruction the front end knows goes through the wrapper here, but FROM, which starts a stage.
    expect([...kinds].sort()).toEqual(INSTRUCTION_NAMES.filter((k) => k !== "from").sort());
    // (The report text is masked later, with every report; the key holds the secret's value only sealed.)
    expect(seen).toEqual(GOLDEN);
  });
});
