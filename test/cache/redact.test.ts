/** Secret-looking build args: masked where shown, sealed (hashed) where stored, never in a miss reason. */
import { describe, expect, it } from "vitest";
import { cacheKey, explainMiss, KEY_VERSION, type KeyInputs } from "../../src/cache/key.js";
import { Redactor, isSealed, secretArgName } from "../../src/cache/redact.js";
import { OcibuildError } from "../../src/errors.js";

const base: KeyInputs = { v: KEY_VERSION, platform: "linux/amd64", parent: "sha256:aa", base: "scratch", instruction: "RUN x" };

describe("Redactor", () => {
  it("knows secret-looking names by PASSWORD, TOKEN, SECRET or KEY in any case", () => {
    for (const n of ["API_TOKEN", "db_password", "MySecret", "SSH_KEY", "keyfile"]) expect(secretArgName(n), n).toBe(true);
    for (const n of ["VERSION", "HTTP_PROXY", "NODE_ENV"]) expect(secretArgName(n), n).toBe(false);
  });

  it("masks values for display, seals them for storage, and unseals exactly", () => {
    const r = new Redactor({ API_TOKEN: "s3cr3t", DB_PASSWORD: "s3cr3t-longer", VERSION: "s3cr3t-not-a-secret-name", SHORT_KEY: "ab" });
    expect(r.names).toEqual(["API_TOKEN", "DB_PASSWORD", "SHORT_KEY"]);
    expect(r.mask("RUN |2 API_TOKEN=s3cr3t DB_PASSWORD=s3cr3t-longer ab")).toBe("RUN |2 API_TOKEN=**** DB_PASSWORD=**** ab");
    const sealed = r.seal("a s3cr3t b s3cr3t-longer");
    expect(sealed).not.toContain("s3cr3t");
    expect(isSealed(sealed)).toBe(true);
    expect(r.unseal(sealed)).toBe("a s3cr3t b s3cr3t-longer");
    expect(new Redactor({}).mask("s3cr3t")).toBe("s3cr3t");
  });

  it("seals a secret-looking variable whatever its value, and a secret inside any other", () => {
    const r = new Redactor({ API_TOKEN: "s3cr3t" });
    const vars = r.sealVariables({ API_TOKEN: "s3cr3t", SSH_KEY: "x", URL: "https://s3cr3t@host", PLAIN: "1" })!;
    expect(JSON.stringify(vars)).not.toMatch(/s3cr3t|"x"/);
    expect(vars.PLAIN).toBe("1");
    expect(vars.URL).toMatch(/^https:\/\/\[secret sha256:[0-9a-f]{16}\]@host$/);
    // The key still follows the value, through its hash.
    const other = new Redactor({ API_TOKEN: "other" });
    expect(cacheKey({ ...base, args: r.sealVariables({ API_TOKEN: "s3cr3t" }) })).not.toBe(cacheKey({ ...base, args: other.sealVariables({ API_TOKEN: "other" }) }));
  });

  it("re-makes an error whose message or hint holds a secret, keeping its code and location", () => {
    const r = new Redactor({ API_TOKEN: "s3cr3t" });
    const e = new OcibuildError("BUILD_RUN_FAILED", "Dockerfile:3: RUN echo s3cr3t failed", { line: 3, hint: "s3cr3t?" });
    const m = r.maskError(e) as OcibuildError;
    expect(m).toBeInstanceOf(OcibuildError);
    expect(m).toMatchObject({ code: "BUILD_RUN_FAILED", line: 3, message: "Dockerfile:3: RUN echo **** failed", hint: "****?" });
    const clean = new OcibuildError("BUILD_RUN_FAILED", "nothing here");
    expect(r.maskError(clean)).toBe(clean);
  });
});

describe("miss reasons", () => {
  it("say a secret-looking build arg or ENV changed, never its value, sealed or from an older plain record", () => {
    const r = new Redactor({ API_TOKEN: "new-value" });
    const prevPlain = { ...base, args: { API_TOKEN: "old-value" } };
    const cur = { ...base, args: r.sealVariables({ API_TOKEN: "new-value" }) };
    expect(explainMiss(prevPlain, cur)).toBe("build arg API_TOKEN changed (value hidden)");
    expect(explainMiss({ ...base, env: {} }, { ...base, env: { GH_TOKEN: "x" } })).toBe("ENV GH_TOKEN added");
    expect(explainMiss({ ...base, args: { V: "1" } }, { ...base, args: { V: "2" } })).toBe('build arg V changed ("1" -> "2")');
  });
});
