/**
 * USER resolution with Docker's (runc's) rules, reading the image's own
 * /etc/passwd and /etc/group from inside `root` (symlinks resolved inside it).
 *  - "" or undefined: root (uid 0, gid 0).
 *  - "name" or "uid": the passwd entry gives gid and home; an unknown numeric uid is
 *    fine (gid 0, home "/"); an unknown name is USER_NOT_FOUND.
 *  - ":group" part: a name looked up in /etc/group (USER_GROUP_NOT_FOUND if absent)
 *    or a numeric gid. Supplementary groups (every group listing the user by
 *    name) apply only when no group is given, as in Docker.
 */
import { open } from "node:fs/promises";
import { OcibuildError } from "../errors.js";
import { resolveFollow } from "./rootfs-path.js";

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
  /** The passwd name when one matched. */
  name?: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const MAX_DB = 16 * 1024 * 1024;
const ID_RE = /^[0-9]+$/;
const MAX_ID = 0xfffffffe;

function parseId(s: string): number | null {
  if (!ID_RE.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) && n <= MAX_ID ? n : null;
}

async function readDb(root: string, name: string, signal?: AbortSignal): Promise<string | null> {
  signal?.throwIfAborted();
  const r = await resolveFollow(root, ["etc", name]);
  if (r === null || !r.stats.isFile()) return null;
  if (r.stats.size > MAX_DB) {
    throw new OcibuildError("USER_DB_TOO_LARGE", `/etc/${name} in the image is ${r.stats.size} bytes; refusing to read more than ${MAX_DB}`);
  }
  const fh = await open(r.hostPath, "r");
  try {
    return await fh.readFile({ encoding: "utf8", signal });
  } finally {
    await fh.close();
  }
}

function lines(text: string | null): string[][] {
  if (text === null) return [];
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

export function parsePasswd(text: string | null): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of lines(text)) {
    const uid = parseId(f[2] ?? "");
    const gid = parseId(f[3] ?? "");
    if (f[0] === undefined || uid === null || gid === null) continue;
    out.push({ name: f[0], uid, gid, home: f[5] ?? "" });
  }
  return out;
}

export function parseGroup(text: string | null): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of lines(text)) {
    const gid = parseId(f[2] ?? "");
    if (f[0] === undefined || gid === null) continue;
    out.push({ name: f[0], gid, members: (f[3] ?? "").split(",").map((m) => m.trim()).filter((m) => m !== "") });
  }
  return out;
}

/** Resolve Docker's USER string against the image's user databases. */
export async function resolveUser(root: string, user: string | undefined, opts: { signal?: AbortSignal } = {}): Promise<ResolvedUser> {
  const spec = (user ?? "").trim();
  const colon = spec.indexOf(":");
  const userArg = colon === -1 ? spec : spec.slice(0, colon);
  const groupArg = colon === -1 ? "" : spec.slice(colon + 1);
  const passwd = parsePasswd(await readDb(root, "passwd", opts.signal));

  let uid = 0;
  let gid = 0;
  let home = "/";
  let name: string | undefined;
  const numericUid = userArg === "" ? 0 : parseId(userArg);
  const match = passwd.find((p) => (numericUid !== null ? p.uid === numericUid : p.name === userArg));
  if (match) {
    uid = match.uid;
    gid = match.gid;
    home = match.home || "/";
    name = match.name;
  } else if (numericUid !== null) {
    uid = numericUid;
  } else {
    throw new OcibuildError("USER_NOT_FOUND", `unable to find user ${userArg}: no matching entries in the image's /etc/passwd`, {
      details: { user: userArg },
      hint: "create the user in an earlier RUN (adduser/useradd), or use a numeric uid[:gid]",
    });
  }

  let additionalGids: number[] = [];
  if (groupArg !== "" || name !== undefined) {
    const groups = parseGroup(await readDb(root, "group", opts.signal));
    if (groupArg !== "") {
      const numericGid = parseId(groupArg);
      const g = groups.find((e) => e.name === groupArg || (numericGid !== null && e.gid === numericGid));
      if (g) gid = g.gid;
      else if (numericGid !== null) gid = numericGid;
      else {
        throw new OcibuildError("USER_GROUP_NOT_FOUND", `unable to find group ${groupArg}: no matching entries in the image's /etc/group`, {
          details: { group: groupArg },
          hint: "create the group in an earlier RUN (addgroup/groupadd), or use a numeric gid",
        });
      }
    } else if (name !== undefined) {
      additionalGids = [...new Set(groups.filter((g) => g.members.includes(name!)).map((g) => g.gid))];
    }
  }
  return { uid, gid, additionalGids, home, name };
}
