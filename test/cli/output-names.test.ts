/**
 * buildx's `--output type=registry,name=REF` and `type=image,name=REF,push=true`:
 * the image goes to the names (several, comma-separated, the csv field quoted as
 * buildx allows), as well as to every -t; an attribute ocibuild does not
 * implement is refused by name. Builds FROM scratch (no RUN) against a real
 * registry; what was pushed is read back with the registry client.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli } from "../helpers/tools.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-output-names-"));
  await writeFile(join(work, "Dockerfile"), "FROM scratch\nCOPY hello.txt /\n");
  await writeFile(join(work, "hello.txt"), "hello, names\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const build = (args: string[]) => cli([...args, "--cache-dir", join(work, "cache"), "-q", work]);

describe.skipIf(!haveRegistry())("--output type=registry|image with name= (needs docker-registry)", () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  beforeAll(async () => {
    reg = await startRegistry();
    client = new RegistryClient();
  });
  afterAll(async () => {
    await client?.close();
    await reg?.stop();
  });
  const digestAt = async (ref: string) => (await client.headManifest(parseReference(ref)))?.digest;

  it("type=registry,name=REF pushes to REF without any -t", async () => {
    const r = await build(["-o", `type=registry,name=${reg.host}/names/a:v1`]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(await digestAt(`${reg.host}/names/a:v1`)).toBe(r.stdout.trim());
  });

  it("type=image,name=REF,push=true pushes to REF as well as to -t", async () => {
    const r = await build(["-t", `${reg.host}/names/t:v1`, "-o", `type=image,name=${reg.host}/names/b:v1,push=true`]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(await digestAt(`${reg.host}/names/b:v1`)).toBe(r.stdout.trim());
    expect(await digestAt(`${reg.host}/names/t:v1`)).toBe(r.stdout.trim());
  });

  it("several names in a quoted csv field, as buildx writes them", async () => {
    const r = await build(["-o", `type=registry,"name=${reg.host}/names/c:v1,${reg.host}/names/c:v2"`]);
    expect(r.stderr).not.toMatch(/error\[/);
    for (const tag of ["v1", "v2"]) expect(await digestAt(`${reg.host}/names/c:${tag}`)).toBe(r.stdout.trim());
  });
});

describe("output attributes ocibuild does not implement are refused by name (exit 2)", () => {
  it.each([
    ["type=registry,name=reg.lan/a:1,oci-mediatypes=true", /"oci-mediatypes"/],
    ["type=registry,name=reg.lan/a:1,push=false", /push=false/],
    ["type=image,name=reg.lan/a:1", /type=image without push=true/],
    ["type=oci,dest=x.tar,push=true", /"push" .*type=oci/],
    ["type=docker,dest=x.tar,unpack=true", /"unpack"/],
    ["type=registry,dest=x", /"dest" .*type=registry/],
    ["type=registry", /needs name=REF or a -t/],
    ["type=registry,name=Not A Ref", /name=Not A Ref/],
    ["type=registry,\"name=reg.lan/a:1", /quote/],
    ["type=oci,dest=x.tar,\"name=a:1,a:2\"", /one name/],
  ])("%s", async (value, why) => {
    const r = await build(["-o", value]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^error\[USAGE_[A-Z_]+\]: --output /);
    expect(r.stderr).toMatch(why);
  });
});
