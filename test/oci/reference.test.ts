import { describe, expect, it } from "vitest";
import { OcibuildError } from "../../src/errors.js";
import { parseReference, parseReferenceNoDefault, withDigest, withTag } from "../../src/oci/reference.js";

const D = `sha256:${"ab".repeat(32)}`;

describe("parseReference", () => {
  it.each([
    ["ubuntu", "docker.io", "library/ubuntu", "latest", "docker.io/library/ubuntu:latest", "ubuntu:latest"],
    ["ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04"],
    ["team/app", "docker.io", "team/app", "latest", "docker.io/team/app:latest", "team/app:latest"],
    ["docker.io/library/busybox:1", "docker.io", "library/busybox", "1", "docker.io/library/busybox:1", "busybox:1"],
    ["index.docker.io/foo/bar", "docker.io", "foo/bar", "latest", "docker.io/foo/bar:latest", "foo/bar:latest"],
    ["docker.io/busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"],
    ["localhost/app", "localhost", "app", "latest", "localhost/app:latest", "localhost/app:latest"],
    ["localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", "localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"],
    ["127.0.0.1:39123/app:v1", "127.0.0.1:39123", "app", "v1", "127.0.0.1:39123/app:v1", "127.0.0.1:39123/app:v1"],
    ["ghcr.io/org/img-name_x.y:tag-1.2_3", "ghcr.io", "org/img-name_x.y", "tag-1.2_3", "ghcr.io/org/img-name_x.y:tag-1.2_3", "ghcr.io/org/img-name_x.y:tag-1.2_3"],
    ["[::1]:5000/app", "[::1]:5000", "app", "latest", "[::1]:5000/app:latest", "[::1]:5000/app:latest"],
    ["Registry.Example/app", "Registry.Example", "app", "latest", "Registry.Example/app:latest", "Registry.Example/app:latest"],
    ["a__b/c--d", "docker.io", "a__b/c--d", "latest", "docker.io/a__b/c--d:latest", "a__b/c--d:latest"],
  ])("%s", (input, registry, repository, tag, full, familiar) => {
    const r = parseReference(input);
    expect(r.registry).toBe(registry);
    expect(r.repository).toBe(repository);
    expect(r.tag).toBe(tag);
    expect(r.digest).toBeUndefined();
    expect(r.toString()).toBe(full);
    expect(String(r)).toBe(full);
    expect(r.familiar).toBe(familiar);
  });

  it("keeps digests, without adding latest", () => {
    const r = parseReference(`ubuntu@${D}`);
    expect(r.tag).toBeUndefined();
    expect(r.digest).toBe(D);
    expect(r.toString()).toBe(`docker.io/library/ubuntu@${D}`);
    expect(r.familiar).toBe(`ubuntu@${D}`);
    const both = parseReference(`localhost:5000/app:v2@${D}`);
    expect(both.tag).toBe("v2");
    expect(both.digest).toBe(D);
    expect(both.toString()).toBe(`localhost:5000/app:v2@${D}`);
  });

  it("does not add latest when asked not to", () => {
    expect(parseReferenceNoDefault("ubuntu").tag).toBeUndefined();
  });

  it.each([
    ["", "empty"],
    ["Ubuntu", "must be lowercase"],
    ["docker.io/Library/ubuntu", "must be lowercase"],
    ["ubuntu:", "tag"],
    ["ubuntu:-bad", "tag"],
    [`ubuntu:${"a".repeat(129)}`, "tag"],
    ["ubuntu@sha256:abc", "not a valid digest"],
    ["https://ghcr.io/a/b", "scheme"],
    ["ghcr.io/", "empty"],
    ["ghcr.io//a", "empty path component"],
    ["a/b_-c", "path component"],
    ["-ab", "path component"],
    ["ab.", "path component"],
    ["localhost:99999/app", "out of range"],
    ["ab".repeat(32), "64-character hexadecimal"],
    [` ubuntu`, "whitespace"],
    [`${"a".repeat(250)}/${"b".repeat(10)}`, "longer than 255"],
  ])("rejects %j (%s)", (input, why) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OcibuildError);
    expect((err as OcibuildError).code).toBe("REFERENCE_INVALID");
    expect((err as OcibuildError).message).toContain(why);
    expect((err as OcibuildError).message).toContain(JSON.stringify(input).slice(1, -1).slice(0, 20));
  });

  it("withTag and withDigest return new references of the same repository", () => {
    const r = parseReference(`localhost:5000/app:v1`);
    const t = withTag(r, "v2");
    expect(t.toString()).toBe("localhost:5000/app:v2");
    expect(r.toString()).toBe("localhost:5000/app:v1");
    const d = withDigest(t, D as never);
    expect(d.toString()).toBe(`localhost:5000/app@${D}`);
    expect(d.tag).toBeUndefined();
    expect(() => withTag(r, "bad tag")).toThrow(OcibuildError);
  });
});
