/**
 * USER resolution with Docker's (runc's) rules, reading the image's own
 * /etc/passwd and /etc/group from inside `root` (symlinks resolved inside it).
 *  - "" or undefined: root (uid 0, gid 0).
 *  - "name" or "uid": the passwd entry gives gid and home; an unknown numeric uid is
 *    fine (gid 0, home "/"); an unknown name is USER_NOT_FOUND. With both parts ids
 *    ("root" meaning 0), as BuildKit, neither has to be found.
 *  - ":group" part: a name looked up in /etc/group (USER_GROUP_NOT_FOUND if absent)
 *    or a numeric gid. Supplementary groups (every group listing the user by
 *    name) apply only when no group is given, as in Docker.
 * File operations own what they make by another rule: fileOwner().
 */
import { open } from "node:fs/promises";
import { OcibuildError } from "../errors.js";
import { resolveFollow } from "./fs/path.js";

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

function userNotFound(user: string): OcibuildError {
  return new OcibuildError("USER_NOT_FOUND", `unable to find user ${user}: no matching entries in the image's /etc/passwd`, {
    details: { user },
    hint: "create the user in an earlier RUN (adduser/useradd), or use a numeric uid[:gid]",
  });
}

function groupNotFound(group: string): OcibuildError {
  return new OcibuildError("USER_GROUP_NOT_FOUND", `unable to find group ${group}: no matching entries in the image's /etc/group`, {
    details: { group },
    hint: "create the group in an earlier RUN (addgroup/groupadd), or use a numeric gid",
  });
}

/** An id as BuildKit reads one without a lookup: a number, or "root" (0). */
function fileId(s: string): number | null {
  return s === "root" ? 0 : parseId(s);
}

/**
 * The owner BuildKit gives what a file operation makes (COPY/ADD --chown, the
 * directories WORKDIR creates under USER), which is not the process user's rule:
 * a number or "root" is taken as is, a uid alone giving uid:uid, without reading
 * /etc/passwd; a user name gives its passwd uid and gid; a group part (a number,
 * "root", or a name in /etc/group) sets the gid. An unknown name is an error
 * (BuildKit silently uses 0 there).
 */
export async function fileOwner(root: string, spec: string, opts: { signal?: AbortSignal } = {}): Promise<{ uid: number; gid: number }> {
  const s = spec.trim();
  const colon = s.indexOf(":");
  const userArg = colon === -1 ? s : s.slice(0, colon);
  const groupArg = colon === -1 ? "" : s.slice(colon + 1);
  let uid: number;
  let gid: number;
  const id = userArg === "" ? 0 : fileId(userArg);
  if (id !== null) uid = gid = id;
  else {
    const entry = parsePasswd(await readDb(root, "passwd", opts.signal)).find((p) => p.name === userArg);
    if (!entry) throw userNotFound(userArg);
    ({ uid, gid } = entry);
  }
  if (groupArg !== "") {
    const g = fileId(groupArg) ?? parseGroup(await readDb(root, "group", opts.signal)).find((e) => e.name === groupArg)?.gid;
    if (g === undefined) throw groupNotFound(groupArg);
    gid = g;
  }
  return { uid, gid };
}

/** Resolve Docker's USER string (the process user of RUN) against the image's user databases. */
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
  // BuildKit's fast path: when both parts are ids ("root" meaning 0), nothing has to be in the databases.
  const fast = groupArg !== "" && fileId(userArg) !== null && fileId(groupArg) !== null;
  const numericUid = userArg === "" ? 0 : fast ? fileId(userArg) : parseId(userArg);
  const match = passwd.find((p) => (numericUid !== null ? p.uid === numericUid : p.name === userArg));
  if (match) {
    uid = match.uid;
    gid = match.gid;
    home = match.home || "/";
    name = match.name;
  } else if (numericUid !== null) {
    uid = numericUid;
  } else {
    throw userNotFound(userArg);
  }

  let additionalGids: number[] = [];
  if (groupArg !== "" || name !== undefined) {
    const groups = parseGroup(await readDb(root, "group", opts.signal));
    if (groupArg !== "") {
      const numericGid = fast ? fileId(groupArg) : parseId(groupArg);
      const g = groups.find((e) => e.name === groupArg || (numericGid !== null && e.gid === numericGid));
      if (g) gid = g.gid;
      else if (numericGid !== null) gid = numericGid;
      else throw groupNotFound(groupArg);
    } else if (name !== undefined) {
      additionalGids = [...new Set(groups.filter((g) => g.members.includes(name!)).map((g) => g.gid))];
    }
  }
  return { uid, gid, additionalGids, home, name };
}
