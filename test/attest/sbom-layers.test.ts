/**
 * The SBOM over layers made by GNU tar (gzip and plain): the final filesystem's
 * packages after whiteouts, opaque directories, links over directories and
 * rewritten package databases, each attributed to the layer that added it; the
 * SPDX document and the in-toto statement around it; failures named and coded.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { PassThrough } from "node:stream";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSbom, sbomStatement, type SbomLayer, type SbomPackage } from "../../src/attest/sbom.js";
import type { DiffID, Digest } from "../../src/oci/digest.js";
import { goElf } from "./go-elf.js";

const pexec = promisify(execFile);

type Tree = Record<string, string | Buffer | { link: string } | { hardlink: string } | { mode: number; data: Buffer }>;

/** Write `tree` under a new directory and pack it with GNU tar (sorted, PAX), gzipped unless `plain`. */
async function layer(work: string, name: string, tree: Tree, plain = false): Promise<SbomLayer> {
  const root = join(work, name);
  await mkdir(root, { recursive: true });
  for (const [path, v] of Object.entries(tree)) {
    const p = join(root, path);
    await mkdir(dirname(p), { recursive: true });
    if (typeof v === "string" || Buffer.isBuffer(v)) await writeFile(p, v);
    else if ("link" in v) await symlink(v.link, p);
    else if ("hardlink" in v) await link(join(root, v.hardlink), p);
    else await writeFile(p, v.data, { mode: v.mode });
  }
  const file = join(work, `${name}.tar${plain ? "" : ".gz"}`);
  await pexec("tar", ["--sort=name", "--format=pax", "--owner=0", "--group=0", "-C", root, plain ? "-cf" : "-czf", file, "."]);
  const bytes = await readFile(file);
  const tar = plain ? bytes : gunzipSync(bytes);
  const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
  return { diffId: sha(tar) as DiffID, digest: sha(bytes) as Digest, open: () => createReadStream(file) };
}

const status = (pkgs: Array<[string, string]>) =>
  pkgs.map(([n, v]) => `Package: ${n}\nStatus: install ok installed\nArchitecture: amd64\nMaintainer: Debian <debian@example.org>\nVersion: ${v}\n`).join("\n");
const npm = (name: string, version: string, license = "MIT") => JSON.stringify({ name, version, license });
const wheel = (name: string, version: string) => `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\nLicense: MIT\n`;
const DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: LGPL-2.1+ or public-domain\n";
const MODINFO = "path\texample.com/app\nmod\texample.com/app\tv1.2.3\th1:x=\ndep\tgolang.org/x/text\tv0.14.0\th1:y=\n";
const NM = "usr/lib/node_modules";
const HUGE = JSON.stringify({ name: "huge", version: "1.0.0", pad: "x".repeat(4 * 1024 * 1024) });
const PY = "usr/lib/python3/dist-packages";

describe("the SBOM of layers", () => {
  let work: string;
  let layers: SbomLayer[];
  const warnings: string[] = [];
  let pkgs: SbomPackage[];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-sbom-"));
    const elf = goElf({ goVersion: "go1.22.1", modinfo: MODINFO });
    layers = [
      await layer(work, "l0", {
        "usr/lib/os-release": 'ID=debian\nVERSION_ID="12"\n',
        "etc/os-release": { link: "../usr/lib/os-release" },
        "var/lib/dpkg/status": status([["libc6", "2.36-9+deb12u14"], ["base-files", "12.4"]]),
        "usr/share/doc/libc6/copyright": DEP5,
        "usr/share/doc/base-files/copyright": "This is Debian's base-files.\nLicense: GPL\n",
        [`${NM}/left-pad/package.json`]: npm("left-pad", "1.3.0", "WTFPL"),
        [`${NM}/@scope/kept/package.json`]: npm("@scope/kept", "2.0.0"),
        [`${NM}/kept/package.json`]: npm("kept", "1.0.0"),
        [`${NM}/kept/node_modules/nested/package.json`]: npm("nested", "0.1.0", "ISC"),
        [`${NM}/kept/lib/package.json`]: npm("not-a-package", "9.9.9"),
        [`${NM}/huge/package.json`]: HUGE,
        [`${NM}/broken/package.json`]: "{ not json",
        [`${PY}/six-1.16.0.dist-info/METADATA`]: wheel("six", "1.16.0"),
        [`${PY}/gone-1.0.dist-info/METADATA`]: wheel("gone", "1.0"),
        "usr/local/bin/app": { mode: 0o755, data: elf },
        "usr/local/share/app.data": { mode: 0o644, data: elf },
      }),
      await layer(work, "l1", {
        "var/lib/dpkg/status": status([["libc6", "2.36-9+deb12u14"], ["base-files", "12.4+deb12u1"], ["libc6-dev", "2.36-9+deb12u14"]]),
        "usr/share/doc/libc6-dev": { link: "libc6" },
        [`${NM}/.wh.left-pad`]: "",
        [`${PY}/.wh..wh..opq`]: "",
        [`${PY}/six-1.16.0.dist-info/METADATA`]: wheel("six", "1.16.0"),
        "usr/local/bin/tool": { mode: 0o755, data: elf },
        "usr/local/bin/tool-link": { hardlink: "usr/local/bin/tool" },
      }),
      await layer(work, "l2", { [`${NM}/@scope`]: { link: "/opt/elsewhere" } }, true),
    ];
    pkgs = (await generateSbom(layers, { name: "test/app:1", sourceDateEpoch: 0, onWarning: (m) => warnings.push(m) })).packages;
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  const summary = () => pkgs.map((p) => `${p.purl} ${p.path} L${p.layer}${p.license ? ` ${p.license}` : ""}`);

  it("lists what the final filesystem holds, each with the layer that added it", () => {
    expect(summary()).toEqual([
      "pkg:deb/debian/base-files@12.4%2Bdeb12u1?arch=amd64&distro=debian-12 /var/lib/dpkg/status L1",
      "pkg:deb/debian/libc6-dev@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12 /var/lib/dpkg/status L1 LGPL-2.1-or-later OR LicenseRef-public-domain",
      "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12 /var/lib/dpkg/status L0 LGPL-2.1-or-later OR LicenseRef-public-domain",
      "pkg:golang/example.com/app@v1.2.3 /usr/local/bin/app L0",
      "pkg:golang/example.com/app@v1.2.3 /usr/local/bin/tool L1",
      "pkg:golang/example.com/app@v1.2.3 /usr/local/bin/tool-link L1",
      "pkg:golang/golang.org/x/text@v0.14.0 /usr/local/bin/app L0",
      "pkg:golang/golang.org/x/text@v0.14.0 /usr/local/bin/tool L1",
      "pkg:golang/golang.org/x/text@v0.14.0 /usr/local/bin/tool-link L1",
      "pkg:golang/stdlib@1.22.1 /usr/local/bin/app L0",
      "pkg:golang/stdlib@1.22.1 /usr/local/bin/tool L1",
      "pkg:golang/stdlib@1.22.1 /usr/local/bin/tool-link L1",
      "pkg:npm/kept@1.0.0 /usr/lib/node_modules/kept/package.json L0 MIT",
      "pkg:npm/nested@0.1.0 /usr/lib/node_modules/kept/node_modules/nested/package.json L0 ISC",
      "pkg:pypi/six@1.16.0 /usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA L1 MIT",
    ]);
  });

  it("warns about the metadata it skipped", () => {
    expect(warnings).toEqual([
      expect.stringMatching(/^SBOM: skipped \/usr\/lib\/node_modules\/broken\/package.json: .*JSON/),
      `SBOM: skipped /usr/lib/node_modules/huge/package.json (${HUGE.length} bytes; metadata files over 4194304 bytes are not read)`,
    ]);
  });

  it("writes an SPDX 2.3 document: the image DESCRIBED, CONTAINING each package, each naming its layer", async () => {
    const { document: doc } = await generateSbom(layers, { name: "test/app:1", sourceDateEpoch: 1700000000 });
    expect(doc).toMatchObject({
      spdxVersion: "SPDX-2.3", dataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT", name: "test/app:1",
      creationInfo: { created: "2023-11-14T22:13:20Z", creators: ["Tool: ocibuild-0.1.0"] },
      hasExtractedLicensingInfos: [{ licenseId: "LicenseRef-public-domain", name: "public-domain" }],
    });
    expect(doc.documentNamespace).toMatch(/^https:\/\/spdx\.org\/spdxdocs\/ocibuild\/test-app-1-[0-9a-f]{32}$/);
    const [root, ...packages] = doc.packages;
    expect(root).toMatchObject({ SPDXID: "SPDXRef-DocumentRoot-Image", name: "test/app:1", primaryPackagePurpose: "CONTAINER" });
    expect(packages).toHaveLength(15);
    const libc = packages.find((p) => p.name === "libc6")!;
    expect(libc).toMatchObject({
      versionInfo: "2.36-9+deb12u14", supplier: "Person: Debian (debian@example.org)", downloadLocation: "NOASSERTION", filesAnalyzed: false,
      licenseConcluded: "NOASSERTION", licenseDeclared: "LGPL-2.1-or-later OR LicenseRef-public-domain", sourceInfo: "found in /var/lib/dpkg/status",
      externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12" }],
      annotations: [{ annotationDate: "2023-11-14T22:13:20Z", annotationType: "OTHER", annotator: "Tool: ocibuild-0.1.0", comment: `layerDiffID: ${layers[0]!.diffId}\nlayerID: ${layers[0]!.digest}` }],
    });
    expect(packages.find((p) => p.name === "libc6-dev")!.annotations).toEqual([expect.objectContaining({ comment: expect.stringContaining(`layerDiffID: ${layers[1]!.diffId}`) })]);
    const ids = new Set(doc.packages.map((p) => p.SPDXID as string));
    expect(ids.size).toBe(16);
    expect(doc.relationships[0]).toEqual({ spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: "SPDXRef-DocumentRoot-Image" });
    expect(doc.relationships.slice(1).map((r) => [r.spdxElementId, r.relationshipType, ids.has(r.relatedSpdxElement)])).toEqual(packages.map(() => ["SPDXRef-DocumentRoot-Image", "CONTAINS", true]));
  });

  it("is the same bytes for the same layers and epoch, and another namespace for other layers", async () => {
    const a = await generateSbom(layers, { name: "test/app:1", sourceDateEpoch: 1 });
    const b = await generateSbom(layers, { name: "test/app:1", sourceDateEpoch: 1 });
    expect(JSON.stringify(a.document)).toBe(JSON.stringify(b.document));
    const c = await generateSbom(layers.slice(0, 2), { name: "test/app:1", sourceDateEpoch: 1 });
    expect(c.document.documentNamespace).not.toBe(a.document.documentNamespace);
    // The third layer only hid @scope/kept: the first two layers still list it.
    expect(c.packages.map((p) => p.name)).toContain("@scope/kept");
  });

  it("wraps the document in an in-toto statement as BuildKit does", async () => {
    const { document } = await generateSbom(layers.slice(0, 1), { name: "x", sourceDateEpoch: 0 });
    const subject = { name: "pkg:docker/test/app@1?platform=linux%2Famd64", digest: { sha256: "ab".repeat(32) } };
    expect(sbomStatement(document, [subject])).toEqual({ _type: "https://in-toto.io/Statement/v0.1", predicateType: "https://spdx.dev/Document", subject: [subject], predicate: document });
    expect(sbomStatement(document, [subject], { statementType: "v1" })._type).toBe("https://in-toto.io/Statement/v1");
  });

  it("reads an Alpine root: apk's db with the distro from os-release", async () => {
    const apk = await layer(work, "alpine", {
      "etc/os-release": "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
      "lib/apk/db/installed": "P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\nP:libcrypto3\nV:3.1.4-r2\nA:x86_64\nL:Apache-2.0\no:openssl\nm:Ariadne Conill <ariadne@dereferenced.org>\n",
    });
    const { packages } = await generateSbom([apk], { name: "alpine", sourceDateEpoch: 0 });
    expect(packages.map((p) => [p.purl, p.license, p.supplier])).toEqual([
      ["pkg:apk/alpine/libcrypto3@3.1.4-r2?arch=x86_64&distro=alpine-3.19.1&upstream=openssl", "Apache-2.0", "Person: Ariadne Conill (ariadne@dereferenced.org)"],
      ["pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1", "MIT", undefined],
    ]);
  });

  it("fails naming the layer when its gzip is cut short, and with ABORTED when aborted", async () => {
    const good = layers[0]!;
    const bytes = await readFile(join(work, "l0.tar.gz"));
    const cut = join(work, "cut.tar.gz");
    await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const broken: SbomLayer = { ...good, open: () => createReadStream(cut) };
    await expect(generateSbom([broken], { name: "x" })).rejects.toMatchObject({ code: "SBOM_LAYER_UNREADABLE", message: expect.stringContaining(good.digest!) });
    const ac = new AbortController();
    ac.abort();
    await expect(generateSbom([good], { name: "x", signal: ac.signal })).rejects.toMatchObject({ code: "ABORTED" });
    await expect(generateSbom([good], { name: "x", sourceDateEpoch: -1 })).rejects.toMatchObject({ code: "SBOM_OPTIONS_INVALID" });
  });

  it("stops a layer stream that stalls when the signal aborts, and closes it", async () => {
    const stalled = new PassThrough();
    stalled.write((await readFile(join(work, "l0.tar.gz"))).subarray(0, 4096));
    const ac = new AbortController();
    const scan = generateSbom([{ ...layers[0]!, open: () => stalled }], { name: "x", signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    await expect(scan).rejects.toMatchObject({ code: "ABORTED" });
    expect(stalled.destroyed).toBe(true);
  });
});
