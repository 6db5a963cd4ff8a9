/**
 * The SBOM's readers of package metadata, on texts shaped like the real files
 * (a bookworm dpkg status, a DEP-5 copyright, Alpine 3.19's installed db, wheel
 * METADATA, package.json), purls in canonical form, licence expressions checked
 * against the SPDX licence list (spdx-expression-parse), and Go build info.
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { promisify } from "node:util";
import parseSpdx from "spdx-expression-parse";
import { describe, expect, it } from "vitest";
import { formatPurl } from "../../src/attest/purl.js";
import { GoBuildInfoScanner, parseBuildInfoBlob } from "../../src/attest/sbom-go.js";
import { parsePackageJson, parsePythonMetadata, person } from "../../src/attest/sbom-lang.js";
import { classifierLicense, licenseExpression } from "../../src/attest/sbom-license.js";
import { parseApkInstalled, parseDebCopyright, parseDpkgStatus, parseOsRelease } from "../../src/attest/sbom-os.js";
import { buildInfoBlob, goElf } from "./go-elf.js";

const pexec = promisify(execFile);

const DPKG_STATUS = `Package: libc6
Status: install ok installed
Priority: optional
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u14
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
Maintainer: Debian GCC Maintainers <debian-gcc@lists.debian.org>

Package: tzdata
Status: install ok unpacked
Architecture: all
Version: 2024a-0+deb12u1
`;

describe("dpkg, copyright, apk, os-release", () => {
  it("lists the packages dpkg has on disk, with source packages, and not the config-files leftovers", () => {
    expect(parseDpkgStatus(DPKG_STATUS)).toEqual([
      { name: "libc6", version: "2.36-9+deb12u14", architecture: "amd64", source: { name: "glibc", version: undefined }, maintainer: "GNU Libc Maintainers <debian-glibc@lists.debian.org>" },
      { name: "libgcc-s1", version: "12.2.0-14", architecture: "amd64", source: { name: "gcc-12", version: "12.2.0-14" }, maintainer: "Debian GCC Maintainers <debian-gcc@lists.debian.org>" },
      { name: "tzdata", version: "2024a-0+deb12u1", architecture: "all", source: undefined, maintainer: undefined },
    ]);
  });

  it("reads a DEP-5 copyright file's License fields as one expression, and nothing from a free-form one", () => {
    const dep5 = [
      "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
      "Upstream-Name: bash",
      "",
      "Files: *",
      "Copyright: 1987-2022 Free Software Foundation, Inc.",
      "License: GPL-3+",
      "",
      "Files: lib/sh/strtoumax.c",
      "License: GPL-2+ or Artistic",
      "",
      "Files: doc/*",
      "License: GFDL-NIV-1.3+",
      "",
      "License: GPL-3+",
      " This program is free software; you can redistribute it",
      " .",
      " On Debian systems, the full text is in /usr/share/common-licenses/GPL-3.",
      "",
    ].join("\n");
    const expr = parseDebCopyright(dep5);
    expect(expr).toBe("GPL-3.0-or-later AND (GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-GFDL-NIV-1.3");
    expect(() => parseSpdx(expr!)).not.toThrow();
    expect(parseDebCopyright("This is the Debian prepackaged version of the GNU C Library.\n\nLicense: LGPL\n")).toBeUndefined();
  });

  it("reads Alpine's installed db", () => {
    const db = [
      "C:Q1Ke/hnzIqrASHl0d0YLrO6/eRHXo=", "P:musl", "V:1.2.4_git20230717-r4", "A:x86_64", "S:407278", "I:667648",
      "T:the musl c library (libc) implementation", "U:https://musl.libc.org/", "L:MIT", "o:musl", "m:Natanael Copa <ncopa@alpinelinux.org>",
      "t:1704387624", "c:2ec6ba2283dd5f41f17a5b5ed91ac05a9e2bbd87", "F:lib", "R:ld-musl-x86_64.so.1", "a:0:0:755", "", "C:Q1...=",
      "P:libcrypto3", "V:3.1.4-r2", "A:x86_64", "L:Apache-2.0", "o:openssl", "m:Ariadne Conill <ariadne@dereferenced.org>", "F:usr/lib", "R:libcrypto.so.3", "",
      "P:ca-certificates-bundle", "V:20230506-r0", "A:x86_64", "L:MPL-2.0 AND MIT", "o:ca-certificates", "",
    ].join("\n");
    expect(parseApkInstalled(db)).toEqual([
      { name: "musl", version: "1.2.4_git20230717-r4", architecture: "x86_64", license: "MIT", origin: "musl", maintainer: "Natanael Copa <ncopa@alpinelinux.org>", url: "https://musl.libc.org/" },
      { name: "libcrypto3", version: "3.1.4-r2", architecture: "x86_64", license: "Apache-2.0", origin: "openssl", maintainer: "Ariadne Conill <ariadne@dereferenced.org>", url: undefined },
      { name: "ca-certificates-bundle", version: "20230506-r0", architecture: "x86_64", license: "MPL-2.0 AND MIT", origin: "ca-certificates", maintainer: undefined, url: undefined },
    ]);
  });

  it("reads os-release with its quoting", () => {
    expect(parseOsRelease('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n')).toEqual({
      id: "debian", idLike: undefined, versionId: "12", versionCodename: "bookworm", prettyName: "Debian GNU/Linux 12 (bookworm)",
    });
    expect(parseOsRelease("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n").versionId).toBe("3.19.1");
  });
});

describe("Python and npm metadata", () => {
  it("reads a wheel's METADATA headers and not its description", () => {
    const meta = [
      "Metadata-Version: 2.4", "Name: Typing_Extensions", "Version: 4.12.2", "Summary: Backported type hints",
      "Author-email: \"Guido van Rossum, Jukka Lehtosalo\" <levkivskyi@gmail.com>", "License-Expression: PSF-2.0",
      "Classifier: License :: OSI Approved :: Python Software Foundation License", "", "License: this line is in the description",
    ].join("\n");
    expect(parsePythonMetadata(meta)).toEqual({
      name: "Typing_Extensions", version: "4.12.2", license: "PSF-2.0", originator: "Person: Guido van Rossum, Jukka Lehtosalo (levkivskyi@gmail.com)", homepage: undefined,
    });
    const classic = "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nHome-page: https://github.com/benjaminp/six\nAuthor: Benjamin Peterson\nAuthor-email: benjamin@python.org\nLicense: MIT\n";
    expect(parsePythonMetadata(classic)).toMatchObject({ name: "six", license: "MIT", originator: "Person: Benjamin Peterson (benjamin@python.org)", homepage: "https://github.com/benjaminp/six" });
    const byClassifier = "Name: x\nVersion: 1\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: BSD License\n";
    expect(parsePythonMetadata(byClassifier)?.license).toBe("LicenseRef-BSD");
    expect(parsePythonMetadata("Name: nover\n")).toBeUndefined();
  });

  it("reads package.json: scoped names, licence objects and arrays, authors as text or objects", () => {
    expect(parsePackageJson(JSON.stringify({ name: "@babel/core", version: "7.24.0", license: "MIT", author: "The Babel Team (https://babel.dev/team)" }))).toEqual({
      name: "@babel/core", version: "7.24.0", license: "MIT", originator: "Person: The Babel Team https://babel.dev/team", homepage: undefined,
    });
    expect(parsePackageJson(JSON.stringify({ name: "old", version: "0.1.0", licenses: [{ type: "MIT" }, { type: "Apache-2.0" }], author: { name: "A B", email: "a@b.c" } }))).toMatchObject({
      license: "MIT OR Apache-2.0", originator: "Person: A B (a@b.c)",
    });
    expect(parsePackageJson(JSON.stringify({ name: "x", version: "1.0.0", license: { type: "ISC" } }))?.license).toBe("ISC");
    expect(parsePackageJson(JSON.stringify({ name: "no-version" }))).toBeUndefined();
    expect(() => parsePackageJson("{ nope")).toThrow(SyntaxError);
  });

  it("writes people as SPDX does", () => {
    expect(person("Jane Doe <jane@example.org>")).toBe("Person: Jane Doe (jane@example.org)");
    expect(person(undefined, "jane@example.org")).toBe("Person: jane@example.org");
    expect(person("  ")).toBeUndefined();
  });
});

describe("purls and licence expressions", () => {
  it("formats purls canonically: encoded versions, sorted qualifiers, npm scopes, Go paths", () => {
    expect(formatPurl({ type: "deb", namespace: "debian", name: "libc6", version: "2.36-9+deb12u14", qualifiers: { distro: "debian-12", arch: "amd64", upstream: "glibc" } }))
      .toBe("pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12&upstream=glibc");
    expect(formatPurl({ type: "deb", namespace: "debian", name: "login", version: "1:4.13+dfsg1-1", qualifiers: { arch: "amd64" } })).toBe("pkg:deb/debian/login@1:4.13%2Bdfsg1-1?arch=amd64");
    expect(formatPurl({ type: "npm", namespace: "@babel", name: "core", version: "7.24.0" })).toBe("pkg:npm/%40babel/core@7.24.0");
    expect(formatPurl({ type: "golang", namespace: "github.com/foo/bar", name: "v2", version: "(devel)" })).toBe("pkg:golang/github.com/foo/bar/v2@%28devel%29");
    expect(formatPurl({ type: "pypi", name: "six" })).toBe("pkg:pypi/six");
  });

  it("turns the licence names found in a bookworm minbase into expressions the SPDX list accepts", () => {
    const cases: Array<[string, string]> = [
      ["GPL-1+ or Artistic", "GPL-1.0-or-later OR Artistic-1.0-Perl"],
      ["LGPL-3+ or GPL-2+", "LGPL-3.0-or-later OR GPL-2.0-or-later"],
      ["BSD-3-clause", "BSD-3-Clause"],
      ["Expat", "MIT"],
      ["GPL-3+ with Bison exception", "LicenseRef-GPL-3.0-or-later-with-Bison AND LicenseRef-exception"],
      ["GPL-2.0-or-later WITH Classpath-exception-2.0", "GPL-2.0-or-later WITH Classpath-exception-2.0"],
      ["(MIT OR Apache-2.0) AND BSD-2-Clause", "(MIT OR Apache-2.0) AND BSD-2-Clause"],
      ["MIT BSD-2-Clause", "MIT AND BSD-2-Clause"],
      ["LGPLv3+_or_GPLv2+", "LicenseRef-LGPLv3-or-GPLv2"],
      ["MIT/X11", "MIT"],
      ["(MIT", "LicenseRef-MIT"],
      ["OR", "LicenseRef-OR"],
    ];
    for (const [text, want] of cases) {
      const got = licenseExpression(text);
      expect([text, got]).toEqual([text, want]);
      expect(() => parseSpdx(got!), `${text} -> ${got}`).not.toThrow();
    }
    expect(classifierLicense("License :: OSI Approved :: MIT License")).toBe("MIT");
    expect(classifierLicense("License :: OSI Approved")).toBeUndefined();
  });
});

const MODINFO = [
  "path\texample.com/app/cmd/app",
  "mod\texample.com/app\t(devel)\t",
  "dep\tgolang.org/x/text\tv0.14.0\th1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=",
  "dep\tgithub.com/old/mod\tv1.0.0\th1:old=",
  "=>\tgithub.com/new/mod\tv1.2.0\th1:new=",
  "build\t-compiler=gc",
  "build\tGOOS=linux",
  "",
].join("\n");

describe("Go build info", () => {
  const want = {
    goVersion: "go1.22.1",
    path: "example.com/app/cmd/app",
    main: { path: "example.com/app", version: "(devel)", sum: undefined },
    deps: [
      { path: "golang.org/x/text", version: "v0.14.0", sum: "h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=" },
      { path: "github.com/new/mod", version: "v1.2.0", sum: "h1:new=" },
    ],
  };

  it("reads the inline header and the framed module info, replacements applied", () => {
    const r = parseBuildInfoBlob(buildInfoBlob("go1.22.1", MODINFO));
    expect(r).toEqual({ state: "ok", info: want });
  });

  it("finds it in a streamed ELF at every chunk boundary, skipping a decoy in the read-only segment", () => {
    const elf = goElf({ goVersion: "go1.22.1", modinfo: MODINFO, decoy: { goVersion: "go1.0", modinfo: "path\tdecoy\n" } });
    const dataAt = elf.indexOf(Buffer.from("\xff Go buildinf:", "latin1"), 300);
    for (let split = dataAt - 20; split < dataAt + 120; split++) {
      const s = new GoBuildInfoScanner();
      s.push(elf.subarray(0, split));
      s.push(elf.subarray(split));
      expect([split, s.result]).toEqual([split, want]);
    }
    const bytewise = new GoBuildInfoScanner();
    for (let i = 0; i < elf.length && bytewise.push(elf.subarray(i, i + 1)); i++);
    expect(bytewise.result).toEqual(want);
  });

  it("reads nothing from a file that is not ELF, even with a build-info blob in it", () => {
    const s = new GoBuildInfoScanner();
    expect(s.push(Buffer.concat([Buffer.from("#!/bin/sh\n".padEnd(32)), buildInfoBlob("go1.22.1", MODINFO)]))).toBe(false);
    expect(s.result).toBeUndefined();
  });

  const realGo = ["/usr/bin/umoci", "/usr/bin/skopeo"].find((f) => existsSync(f));
  it.skipIf(realGo === undefined)(`reads a real Go binary as readelf locates its .go.buildinfo section (${realGo ?? "needs umoci or skopeo"})`, async () => {
    const bin = readFileSync(realGo!);
    const { stdout } = await pexec("readelf", ["-SW", realGo!]);
    const m = / \.go\.buildinfo\s+PROGBITS\s+[0-9a-f]+ ([0-9a-f]+) /.exec(stdout);
    expect(m).not.toBeNull();
    const direct = parseBuildInfoBlob(bin.subarray(parseInt(m![1]!, 16)));
    expect(direct.state).toBe("ok");
    const s = new GoBuildInfoScanner();
    for (let i = 0; i < bin.length; i += 65536) if (!s.push(bin.subarray(i, i + 65536))) break;
    expect(s.result).toEqual(direct.state === "ok" ? direct.info : undefined);
    expect(s.result?.goVersion).toMatch(/^go1\.\d+/);
    expect(s.result?.path).toMatch(/^github\.com\//);
  });
});
