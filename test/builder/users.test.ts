import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fileOwner, resolveUser } from "../../src/builder/users.js";

let base: string;
let root: string;

const PASSWD = [
  "root:x:0:0:root:/root:/bin/sh",
  "# a comment",
  "app:x:1000:1001:App:/home/app:/bin/sh",
  "nohome:x:1002:1002::",
  "broken line",
  "",
].join("\n");
const GROUP = ["root:x:0:", "wheel:x:10:app,root", "appgrp:x:1001:", "staff:x:50: other , app ", "audio:x:29:nohome", ""].join("\n");

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "ocibuild-users-"));
  root = join(base, "root");
  await mkdir(join(root, "etc"), { recursive: true });
  await writeFile(join(root, "etc/passwd"), PASSWD);
  await writeFile(join(root, "etc/group"), GROUP);
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

describe("resolveUser (Docker's USER rules)", () => {
  it("defaults to root with root's home", async () => {
    expect(await resolveUser(root, undefined)).toEqual({ uid: 0, gid: 0, additionalGids: [10], home: "/root", name: "root" });
    expect(await resolveUser(root, "")).toMatchObject({ uid: 0, gid: 0, home: "/root" });
  });

  it("resolves a name to uid, primary gid, supplementary groups and home", async () => {
    expect(await resolveUser(root, "app")).toEqual({ uid: 1000, gid: 1001, additionalGids: [10, 50], home: "/home/app", name: "app" });
  });

  it("resolves a uid found in passwd like its name", async () => {
    expect(await resolveUser(root, "1000")).toMatchObject({ uid: 1000, gid: 1001, additionalGids: [10, 50], home: "/home/app" });
  });

  it("accepts an unknown numeric uid with gid 0 and HOME /", async () => {
    expect(await resolveUser(root, "4242")).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: "/" });
  });

  it("an explicit group wins and drops supplementary groups", async () => {
    expect(await resolveUser(root, "app:staff")).toMatchObject({ uid: 1000, gid: 50, additionalGids: [] });
    expect(await resolveUser(root, "app:77")).toMatchObject({ uid: 1000, gid: 77, additionalGids: [] });
    expect(await resolveUser(root, "4242:4343")).toEqual({ uid: 4242, gid: 4343, additionalGids: [], home: "/" });
  });

  it("an empty home field means /", async () => {
    expect(await resolveUser(root, "nohome")).toMatchObject({ uid: 1002, gid: 1002, additionalGids: [29], home: "/" });
  });

  it("an unknown name is USER_NOT_FOUND naming it; an unknown group USER_GROUP_NOT_FOUND", async () => {
    await expect(resolveUser(root, "ghost")).rejects.toMatchObject({ code: "USER_NOT_FOUND", message: expect.stringContaining("ghost") });
    await expect(resolveUser(root, "app:ghosts")).rejects.toMatchObject({ code: "USER_GROUP_NOT_FOUND", message: expect.stringContaining("ghosts") });
  });

  it("works without /etc/passwd for numeric users and fails for names", async () => {
    await rm(join(root, "etc"), { recursive: true });
    expect(await resolveUser(root, "1000:1000")).toEqual({ uid: 1000, gid: 1000, additionalGids: [], home: "/" });
    expect(await resolveUser(root, undefined)).toEqual({ uid: 0, gid: 0, additionalGids: [], home: "/" });
    await expect(resolveUser(root, "app")).rejects.toMatchObject({ code: "USER_NOT_FOUND" });
    // BuildKit's fast path: two ids ("root" is 0) need no database; "root" alone still does.
    expect(await resolveUser(root, "root:root")).toEqual({ uid: 0, gid: 0, additionalGids: [], home: "/" });
    expect(await resolveUser(root, "1000:root")).toMatchObject({ uid: 1000, gid: 0 });
    await expect(resolveUser(root, "root")).rejects.toMatchObject({ code: "USER_NOT_FOUND" });
  });

  it("never reads the host's files through a symlinked /etc/passwd", async () => {
    const outside = join(base, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "passwd"), "hostuser:x:777:777::/host:/bin/sh\n");
    await rm(join(root, "etc/passwd"));
    // Absolute: resolved inside the root (where it does not exist), never on the host.
    await symlink(join(outside, "passwd"), join(root, "etc/passwd"));
    await expect(resolveUser(root, "hostuser")).rejects.toMatchObject({ code: "USER_NOT_FOUND" });
    // Relative, climbing out: refused.
    await rm(join(root, "etc/passwd"));
    await symlink("../../outside/passwd", join(root, "etc/passwd"));
    await expect(resolveUser(root, "hostuser")).rejects.toMatchObject({ code: "ROOTFS_UNSAFE_PATH" });
    // A symlink that stays inside is followed.
    await rm(join(root, "etc/passwd"));
    await writeFile(join(root, "etc/passwd.real"), "inside:x:5:5::/in:/bin/sh\n");
    await symlink("/etc/passwd.real", join(root, "etc/passwd"));
    expect(await resolveUser(root, "inside")).toMatchObject({ uid: 5, gid: 5, home: "/in" });
  });
});

describe("fileOwner (BuildKit's owner for COPY --chown and WORKDIR)", () => {
  it("takes numbers and root as ids without a lookup, a uid alone as uid:uid", async () => {
    expect(await fileOwner(root, "1000")).toEqual({ uid: 1000, gid: 1000 });
    expect(await fileOwner(root, "0")).toEqual({ uid: 0, gid: 0 });
    await rm(join(root, "etc"), { recursive: true });
    expect(await fileOwner(root, "root")).toEqual({ uid: 0, gid: 0 });
    expect(await fileOwner(root, "root:root")).toEqual({ uid: 0, gid: 0 });
    expect(await fileOwner(root, "9999")).toEqual({ uid: 9999, gid: 9999 });
    expect(await fileOwner(root, "9999:root")).toEqual({ uid: 9999, gid: 0 });
    expect(await fileOwner(root, "9999:12")).toEqual({ uid: 9999, gid: 12 });
  });

  it("gives a name its passwd uid and gid; a group name is looked up in /etc/group", async () => {
    expect(await fileOwner(root, "app")).toEqual({ uid: 1000, gid: 1001 });
    expect(await fileOwner(root, "app:staff")).toEqual({ uid: 1000, gid: 50 });
    expect(await fileOwner(root, "1000:wheel")).toEqual({ uid: 1000, gid: 10 });
    await expect(fileOwner(root, "ghost")).rejects.toMatchObject({ code: "USER_NOT_FOUND", message: expect.stringContaining("ghost") });
    await expect(fileOwner(root, "app:ghosts")).rejects.toMatchObject({ code: "USER_GROUP_NOT_FOUND", message: expect.stringContaining("ghosts") });
  });
});
