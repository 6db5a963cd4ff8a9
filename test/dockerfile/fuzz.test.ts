/**
 * Property/fuzz test: random bytes and random mutations of valid Dockerfiles
 * never make the front end throw anything but an OcibuildError with a
 * DOCKERFILE_* (or DOCKERIGNORE_*) code. Bounded iterations, fixed seed
 * (printed, override with OCIBUILD_FUZZ_SEED to reproduce or explore).
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import {
  createIgnoreMatcher,
  decodeUtf8Lossless,
  dumpAst,
  expandWord,
  expandWords,
  parseDockerfile,
  parseDockerignore,
  planStages,
} from "../../src/dockerfile/index.js";
import { REPO_ROOT, conformanceBuildkitDir } from "./conformance-dir.js";

const SEED = Number(process.env.OCIBUILD_FUZZ_SEED ?? 0x5eed_d0c) >>> 0;
const ITERATIONS = 1500;

/** mulberry32: a small deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TOKENS = [
  "\\\n", "`\n", "\n", "\r\n", " ", "\t", "#", "# escape=`\n", "# syntax=x\n", "\ufeff", "<<EOF", "<<-EOF", "<<'EOF'", "EOF\n",
  "\tEOF\n", "${", "}", "$", "${A:-", "${A%%", "${A/", "/", "\"", "'", "[", "]", "[\"a\"]", ",", "=", "--", "--from=",
  "--mount=type=cache,from=", "FROM ", "FROM a AS b\n", "RUN ", "COPY ", "ADD ", "ONBUILD ", "HEALTHCHECK ", "CMD ", "ENV ",
  "ARG ", "LABEL ", "SHELL ", "VOLUME ", "EXPOSE ", "USER ", "WORKDIR ", "MAINTAINER ", "STOPSIGNAL ", "AS ", "NONE", "*", "?",
  "**", "!", "\u00a0", "\u2028", "é", "🐳", "\0", "\x85",
];

function corpus(): string[] {
  const out: string[] = [];
  const dirs: string[] = [join(REPO_ROOT, "testdata/dockerfile/parse"), join(REPO_ROOT, "testdata/dockerfile/stages")];
  const bk = conformanceBuildkitDir();
  if (bk !== undefined) dirs.push(join(bk, "parser"));
  for (const d of dirs) for (const c of readdirSync(d)) out.push(readFileSync(join(d, c, "Dockerfile"), "utf8"));
  return out;
}

function mutate(text: string, rand: () => number): string {
  let s = text;
  const n = 1 + Math.floor(rand() * 6);
  for (let k = 0; k < n; k++) {
    const pos = Math.floor(rand() * (s.length + 1));
    const op = Math.floor(rand() * 6);
    const tok = TOKENS[Math.floor(rand() * TOKENS.length)]!;
    if (op === 0) s = s.slice(0, pos) + tok + s.slice(pos);
    else if (op === 1) s = s.slice(0, pos) + s.slice(pos + 1 + Math.floor(rand() * 8));
    else if (op === 2) s = s.slice(0, pos) + tok + s.slice(pos + tok.length);
    else if (op === 3) {
      const lines = s.split("\n");
      const i = Math.floor(rand() * lines.length);
      lines.splice(Math.floor(rand() * lines.length), 0, lines[i]!);
      s = lines.join("\n");
    } else if (op === 4) s = s.slice(0, pos) + String.fromCharCode(Math.floor(rand() * 128)) + s.slice(pos);
    else s = s.slice(pos) + s.slice(0, pos);
  }
  return s;
}

function randomBytes(rand: () => number): string {
  const len = Math.floor(rand() * 200);
  const bytes = new Uint8Array(len);
  for (let i = 0; i < len; i++) bytes[i] = rand() < 0.6 ? 32 + Math.floor(rand() * 95) : Math.floor(rand() * 256);
  return new TextDecoder("utf-8").decode(bytes);
}

function randomTokens(rand: () => number): string {
  let s = "";
  const n = Math.floor(rand() * 30);
  for (let i = 0; i < n; i++) s += TOKENS[Math.floor(rand() * TOKENS.length)]!;
  return s;
}

const amd64 = { os: "linux", architecture: "amd64" };

/** Runs everything the front end offers on `text`; returns the unexpected throwable, if any. */
function exercise(text: string): unknown {
  const coded = (e: unknown) => isOcibuildError(e) && /^DOCKER(FILE|IGNORE)_[A-Z_]+$/.test(e.code);
  try {
    const parsed = parseDockerfile(text);
    dumpAst(parsed.ast);
    try {
      planStages(parsed, { buildPlatform: amd64, targetPlatform: amd64, buildArgs: { A: "x" } });
    } catch (e) {
      if (!coded(e)) return e;
    }
  } catch (e) {
    if (!coded(e)) return e;
  }
  for (const fn of [expandWord, expandWords]) {
    try {
      fn(text, { A: "a b", B: "" });
    } catch (e) {
      if (!coded(e)) return e;
    }
  }
  try {
    const m = createIgnoreMatcher(parseDockerignore(text));
    m.ignores("a/b.txt");
    m.mayMatchUnder("a");
  } catch (e) {
    if (!coded(e)) return e;
  }
  return undefined;
}

describe("front end fuzzing", () => {
  console.log(`dockerfile fuzz seed: 0x${SEED.toString(16)} (set OCIBUILD_FUZZ_SEED to change)`);
  const seeds = corpus();

  it("the corpus is non-trivial and parses", () => {
    expect(seeds.length).toBeGreaterThan(5);
  });

  it(`random bytes and token soup (${ITERATIONS} each) only raise coded errors`, () => {
    const rand = rng(SEED);
    for (let i = 0; i < ITERATIONS; i++) {
      for (const input of [randomBytes(rand), randomTokens(rand)]) {
        const bad = exercise(input);
        if (bad !== undefined) expect.fail(`iteration ${i}: ${String(bad)}\ninput: ${JSON.stringify(input)}`);
      }
    }
  });

  it(`random mutations of valid Dockerfiles (${ITERATIONS}) only raise coded errors`, () => {
    const rand = rng(SEED ^ 0x9e3779b9);
    for (let i = 0; i < ITERATIONS; i++) {
      const input = mutate(seeds[Math.floor(rand() * seeds.length)]!, rand);
      const bad = exercise(input);
      if (bad !== undefined) expect.fail(`iteration ${i}: ${String(bad)}\ninput: ${JSON.stringify(input)}`);
    }
  });

  it("decodeUtf8Lossless round-trips any bytes and agrees with TextDecoder on valid UTF-8", () => {
    const rand = rng(SEED ^ 0x51ed);
    for (let i = 0; i < ITERATIONS; i++) {
      const len = Math.floor(rand() * 40);
      const bytes = Buffer.alloc(len);
      for (let k = 0; k < len; k++) bytes[k] = rand() < 0.5 ? Math.floor(rand() * 128) : 0x80 + Math.floor(rand() * 128);
      const text = decodeUtf8Lossless(bytes);
      const back = Buffer.concat(
        Array.from(text, (ch) => {
          const c = ch.charCodeAt(0);
          return ch.length === 1 && c >= 0xdc80 && c <= 0xdcff ? Buffer.from([c - 0xdc00]) : Buffer.from(ch, "utf8");
        }),
      );
      expect(back.equals(bytes), bytes.toString("hex")).toBe(true);
      const valid = Buffer.from(bytes.toString("utf8"), "utf8");
      expect(decodeUtf8Lossless(valid)).toBe(new TextDecoder("utf-8", { ignoreBOM: true }).decode(valid));
    }
  });
});
