import { describe, expect, it } from "vitest";
import { cacheKey, canonicalJson, explainMiss, KEY_VERSION, type KeyInputs } from "../../src/cache/key.js";

const base: KeyInputs = { v: KEY_VERSION, platform: "linux/amd64", parent: "sha256:aa", base: "scratch", instruction: "COPY a /a" };

describe("cache keys", () => {
  it("are the same for the same inputs whatever the key order, and differ for any change", () => {
    const a = cacheKey({ ...base, env: { A: "1", B: "2" } });
    const b = cacheKey({ ...base, env: { B: "2", A: "1" } });
    expect(a).toBe(b);
    expect(a).toMatch(/^[a-f0-9]{64}$/);
    expect(cacheKey({ ...base, env: { A: "1", B: "3" } })).not.toBe(a);
    expect(cacheKey({ ...base, v: KEY_VERSION + 1, env: { A: "1", B: "2" } })).not.toBe(a);
    expect(cacheKey({ ...base, platform: "linux/arm64", env: { A: "1", B: "2" } })).not.toBe(a);
  });

  it("the base's name is for the report only: the same base content under another name gives the same key", () => {
    expect(cacheKey({ ...base, base: "127.0.0.1:5000/busybox@sha256:aa" })).toBe(cacheKey({ ...base, base: "127.0.0.1:6000/busybox@sha256:aa" }));
  });

  it("canonical JSON leaves out undefined fields", () => {
    expect(canonicalJson({ b: 1, a: undefined, c: [1, { z: 1, y: 2 }] })).toBe('{"b":1,"c":[1,{"y":2,"z":1}]}');
    // An undefined array element is empty, as it always was (keys made before stay the same).
    expect(canonicalJson([1, undefined, 2])).toBe("[1,,2]");
  });

  it("canonical JSON is JSON.stringify with every object's keys sorted", () => {
    const sorted = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(sorted) : v !== null && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])])) : v;
    const values: unknown[] = [
      {},
      [],
      null,
      "x\n\"y\u00e9",
      -1.5e-7,
      true,
      { z: [], a: {}, m: [null, false, 0, ""], "\u00e9": { "b c": [[1], { y: 1, x: [2, { q: "r" }] }] } },
      { files: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`src/f${(i * 37) % 50}.py`, `file:644:${i}`])), env: { PATH: "/bin", A: "1" }, shell: ["/bin/sh", "-c"] },
    ];
    for (const v of values) expect(canonicalJson(v)).toBe(JSON.stringify(sorted(v)));
  });

  it("explains a miss by the input that changed", () => {
    expect(explainMiss({ ...base, files: { "src/app.py": "1", "x": "1" } }, { ...base, files: { "src/app.py": "2", "x": "1" } })).toBe("src/app.py changed");
    expect(explainMiss({ ...base, files: { x: "1" } }, { ...base, files: { x: "1", y: "1" } })).toBe("y added");
    expect(explainMiss({ ...base, args: { VERSION: "1.0" } }, { ...base, args: { VERSION: "1.1" } })).toBe('build arg VERSION changed ("1.0" -> "1.1")');
    expect(explainMiss(base, { ...base, instruction: "COPY b /b" })).toBe("instruction text changed");
    expect(explainMiss(base, { ...base, base: "img@sha256:bb", parent: "x" })).toBe("base image changed (scratch -> img@sha256:bb)");
    expect(explainMiss(base, { ...base, parent: "sha256:cc" })).toBe("parent step rebuilt");
    expect(explainMiss({ ...base, env: { A: "1" } }, { ...base, env: {} })).toBe("ENV A removed");
  });
});
