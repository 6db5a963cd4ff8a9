/** Which arguments are expanded, per BuildKit's dispatcher (expandInstruction, resolveArgs). */
import { describe, expect, it } from "vitest";
import { expandInstruction, parseDockerfile, resolveArgs } from "../../src/dockerfile/index.js";
import type { Instruction } from "../../src/dockerfile/index.js";

const env = { A: "aa", B: "b b", D: "/dst", U: "1000", P: "8080" };

function instrs(body: string): Instruction[] {
  return parseDockerfile(`FROM x\n${body}`).instructions.slice(1);
}

describe("expandInstruction", () => {
  it("expands ENV/LABEL keys and values, removing quotes", () => {
    const [e, l] = instrs('ENV K_$A="$B" other=${A}x\nLABEL "$A.label"=\'$B\'\n');
    expect(expandInstruction(e!, { env })).toMatchObject({ pairs: [{ key: "K_aa", value: "b b" }, { key: "other", value: "aax" }] });
    expect(expandInstruction(l!, { env })).toMatchObject({ pairs: [{ key: "aa.label", value: "$B" }] });
  });

  it("expands COPY sources, destination, --chown, --chmod but not --from", () => {
    const [c] = instrs("COPY --from=$A --chown=$U:$U --chmod=${M:-644} src/$A ${D}/\n");
    expect(expandInstruction(c!, { env })).toMatchObject({ from: "$A", chown: "1000:1000", chmod: "644", sources: ["src/aa"], dest: "/dst/" });
  });

  it("expands heredoc bodies only for unquoted delimiters, keeping quotes literal", () => {
    const [c] = instrs("COPY <<one <<'two' /d/\n\"$A\" '$B'\none\n$A\ntwo\n");
    const out = expandInstruction(c!, { env });
    expect(out.kind === "copy" && out.heredocs.map((h) => h.content)).toEqual(["\"aa\" 'b b'\n", "$A\n"]);
  });

  it("leaves RUN/CMD/ENTRYPOINT/HEALTHCHECK text alone but expands RUN --mount values", () => {
    const [r, c, h] = instrs("RUN --mount=type=cache,target=/c/$A echo $A\nCMD echo $A\nHEALTHCHECK CMD echo $A\n");
    expect(expandInstruction(r!, { env })).toMatchObject({ command: { text: "echo $A" }, mounts: ["type=cache,target=/c/aa"] });
    expect(expandInstruction(c!, { env })).toMatchObject({ command: { text: "echo $A" } });
    expect(expandInstruction(h!, { env })).toMatchObject({ test: ["CMD-SHELL", "echo $A"] });
  });

  it("splits EXPOSE words after expansion and expands WORKDIR, USER, VOLUME, STOPSIGNAL", () => {
    const [x, w, u, v, s] = instrs("EXPOSE $P ${B}\nWORKDIR /app/$A\nUSER $U\nVOLUME $D\nSTOPSIGNAL SIG${A}\n");
    expect(expandInstruction(x!, { env })).toMatchObject({ ports: ["8080", "b", "b"] });
    expect(expandInstruction(w!, { env })).toMatchObject({ path: "/app/aa" });
    expect(expandInstruction(u!, { env })).toMatchObject({ user: "1000" });
    expect(expandInstruction(v!, { env })).toMatchObject({ paths: ["/dst"] });
    expect(expandInstruction(s!, { env })).toMatchObject({ signal: "SIGaa" });
  });

  it("reports used and unset variables", () => {
    const used: string[] = [];
    const unset: string[] = [];
    expandInstruction(instrs("WORKDIR /$A/$NOPE\n")[0]!, { env, onUsed: (n) => used.push(n), onUnset: (n) => unset.push(n) });
    expect([used, unset]).toEqual([["A"], ["NOPE"]]);
  });
});

describe("resolveArgs", () => {
  const [arg] = instrs("ARG BA=default GL NONE WITHDEF=$A-x\n");
  it("build args win unexpanded, defaults expand, bare ARGs take the global value or stay unset", () => {
    expect(arg!.kind).toBe("arg");
    if (arg!.kind !== "arg") return;
    const out = resolveArgs(arg!, { buildArgs: { BA: "$literal" }, globalArgs: { GL: "global" }, env });
    expect(out).toEqual([
      { key: "BA", value: "$literal" },
      { key: "GL", value: "global" },
      { key: "NONE" },
      { key: "WITHDEF", value: "aa-x" },
    ]);
  });

  it("never expands an ARG's name (BuildKit since dockerfile 1.8), only its default", () => {
    const [named] = instrs("ARG ${src}=$src\n");
    if (named!.kind !== "arg") throw new Error("not an ARG");
    expect(resolveArgs(named!, { buildArgs: {}, globalArgs: {}, env: { src: "file3" } })).toEqual([{ key: "${src}", value: "file3" }]);
  });

  it("expands each default with the names declared before it in the same ARG", () => {
    const [seq] = instrs("ARG X=1 Y=$X-$A\n");
    if (seq!.kind !== "arg") throw new Error("not an ARG");
    expect(resolveArgs(seq!, { buildArgs: {}, globalArgs: {}, env })).toEqual([
      { key: "X", value: "1" },
      { key: "Y", value: "1-aa" },
    ]);
    expect(resolveArgs(seq!, { buildArgs: { X: "cli" }, globalArgs: {}, env })).toEqual([
      { key: "X", value: "cli" },
      { key: "Y", value: "cli-aa" },
    ]);
  });
});

describe("parseOnbuildTriggers", () => {
  it("parses an image's triggers into instructions, heredocs included", async () => {
    const { parseOnbuildTriggers } = await import("../../src/dockerfile/index.js");
    const out = parseOnbuildTriggers(["RUN echo hi", "COPY <<X /x\nhello\nX", "ENV A=b"]);
    expect(out).toMatchObject([
      { kind: "run", command: { form: "shell", text: "echo hi" }, range: { startLine: 1 } },
      { kind: "copy", dest: "/x", heredocs: [{ name: "X", content: "hello\n" }], range: { startLine: 2 } },
      { kind: "env", pairs: [{ key: "A", value: "b" }] },
    ]);
  });

  it("refuses FROM/ONBUILD/MAINTAINER triggers and reports bad ones by index", async () => {
    const { parseOnbuildTriggers } = await import("../../src/dockerfile/index.js");
    expect(() => parseOnbuildTriggers(["RUN a", "FROM x"], { file: "alpine ONBUILD" })).toThrow(
      expect.objectContaining({ code: "DOCKERFILE_ONBUILD", line: 2, message: "alpine ONBUILD:2: FROM isn't allowed as an ONBUILD trigger" }),
    );
    expect(() => parseOnbuildTriggers(["RUN <<EOF"])).toThrow(
      expect.objectContaining({ code: "DOCKERFILE_HEREDOC", line: 1, message: expect.stringMatching(/^ONBUILD:1: unterminated heredoc/) }),
    );
  });
});
