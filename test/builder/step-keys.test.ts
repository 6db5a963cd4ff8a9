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

// [instruction as reported, key, miss reason], computed with KEY_VERSION 3.
const GOLDEN: [string, string, string][] = [
  ["ARG VERSION=1.0","9c6c163d87319acc646c0002e11a0e3c80824f6c6ba2db1fa2e9cd40145c2e39","no previous entry"],
  ["ARG API_TOKEN=s3cret-value","66b88d2a74f41ade92b35e9ac2e15978224416e28bf7e6d8480f7d6539d7afc4","no previous entry"],
  ["ENV APP=/app EXTRA=1.0","9ffdd1c4d7c55c524a6a24399d94bc60d621a4fe88a94bed2fbd74932c700427","no previous entry"],
  ["LABEL org.example.version=1.0","f65092301e5e52257b2c3e5ea296d5f096cdad47c5313fa9ce0ace0cdfc1ce41","no previous entry"],
  ["WORKDIR /app","0d748e46462eb7af9afccb2dd830229524cb6c0163719c3e457e5c946c339299","no previous entry"],
  ["COPY a.txt dir/ ./","59b4abcdcf8ab35746563f7d8823ce2c4b8fdfae146a8b9a8317d6a5e8d571fe","parent step rebuilt"],
  ["COPY --chmod=0755 /bin/hello","752f1f21e74bbe344d66de99b403017fef00a260d4f859e307c8edec5113f25d","parent step rebuilt"],
  ["COPY --link a.txt /linked/","fdd31260f1be6052fa90407c7bd259cb7bc9eb601cfce654bca5c28841b72275","parent step rebuilt"],
  ["COPY --from=build /out /from-build/","2c81b8320eb9aae7857d7a1d84af441da60dcb71ad05c6d82b9fbd56514cd5fc","parent step rebuilt"],
  ["ADD --chown=1:1 a.txt /added/","8e5d8244954009fc4d4e3675b0999bd2e7a6c0b1998266edcdbd5fa5401ef09b","parent step rebuilt"],
  ["RUN echo $VERSION $API_TOKEN","da44070395081cc77c671da5197abf7125f13de8219b5869d74ffaeafa6b2293","parent step rebuilt"],
  ["RUN [\"/bin/true\"]","5d5ef159281cedeb453b1d3b06ba9a5c96d540685624e7acd37d17d3c75609e7","parent step rebuilt"],
  ["USER 1000:1000","2d8f8bc5a70cc393007521fbe95557ef4a4dfc11fe8509876d6df4640b46ef75","no previous entry"],
  ["EXPOSE 8080/tcp 53/udp","b7afb231d000962fdd20fb69fc800542c9f82d24b39c29550e2439ada55bb95f","no previous entry"],
  ["VOLUME [/data]","a0921a52b13c3cd352a27192173284d51b3ca53908c8a5cb20b9b10adfc8765b","no previous entry"],
  ["STOPSIGNAL SIGTERM","8db5fb723d98a1d92871c4849ca5c83090742a48c851a9275b6f6b032190c553","no previous entry"],
  ["HEALTHCHECK [\"CMD\",\"/bin/true\"]","285e32e112ea7751fe132360f288b7d4a9826d43afad87baa188c01b98ee7b68","no previous entry"],
  ["SHELL [\"/bin/sh\",\"-ec\"]","d85e0e8280a615c79938f021ad1600accd74056b2a487da83fc9043a64b690c9","no previous entry"],
  ["ONBUILD RUN echo child","9e35153a739347982febbf5054ae6182b99d5602e2cc2585099591e01319614b","no previous entry"],
  ["MAINTAINER someone","875d237c4de9e2af61d1175e919becf4c8e21d65c675e019d662eefb454feffe","no previous entry"],
  ["CMD [\"/bin/hello\"]","c6cf23649704993394ce1cc63cbbccaf7f043b35947805b220bc930903a9e0b5","no previous entry"],
  ["ENTRYPOINT [\"/bin/sh\"]","c4300e63ad4fe77e477fbf0537e36919b4b2fd65ac4dcf3317247f46d4831dfb","no previous entry"],

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
    mountCacheDir: join(dir, "mounts"),
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
