/**
 * A small, deterministic POSIX.1-2001 (PAX) tar encoder for layer entries.
 *
 * Every header is a ustar header; anything ustar cannot carry exactly (paths or
 * link targets over 100 bytes or not ASCII, ids and sizes over the octal field
 * limits, negative or huge mtimes, long or non-ASCII user/group names, xattrs)
 * goes into a preceding PAX extended header ('x') whose records are sorted by key.
 * No global headers, no atime/ctime, no GNU extensions, no padding to a 10 KiB
 * record: the output depends on the entries and nothing else (no pid, no clock).
 */
import { OcibuildError } from "../errors.js";
import type { EntryType, LayerEntry } from "./layer.js";

export const BLOCK = 512;

const TYPEFLAG: Record<EntryType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  directory: "5",
  fifo: "6",
};

/** Largest value an octal field of `width` bytes holds with its trailing NUL. */
function octalMax(width: number): number {
  return 8 ** (width - 1) - 1;
}

function isAscii(s: string): boolean {
  // Printable ASCII only; control characters and NUL go to PAX records as well.
  return /^[\x20-\x7e]*$/.test(s);
}

function invalid(path: string, msg: string): never {
  throw new OcibuildError("LAYER_ENTRY_INVALID", `invalid layer entry "${path}": ${msg}`, {
    hint: "entry paths are relative, '/'-separated, without '.', '..' or empty components and without a trailing '/'",
  });
}

/** An empty, "." or ".." component anywhere in a "/"-separated path. */
const BAD_COMPONENT = /(?:^|\/)\.{0,2}(?:\/|$)/;

function checkPath(entry: string, p: string, what: string): void {
  if (typeof p !== "string" || p === "") invalid(String(entry), `empty ${what}`);
  if (p.includes("\0")) invalid(entry, `${what} contains a NUL byte`);
  if (p.startsWith("/")) invalid(entry, `${what} is absolute`);
  // Checked once per entry of every layer: the components are split out only to name a bad one.
  if (!BAD_COMPONENT.test(p)) return;
  for (const part of p.split("/")) {
    if (part === "" || part === "." || part === "..") invalid(entry, `${what} has a "${part}" component`);
  }
}

/** Checks an entry before any byte of it is written; throws LAYER_ENTRY_INVALID. */
export function validateEntry(e: LayerEntry): void {
  const p = e.path;
  checkPath(p, p, "path");
  if (!Object.hasOwn(TYPEFLAG, e.type)) invalid(p, `unknown entry type ${JSON.stringify(e.type)}`);
  if (!Number.isInteger(e.mode) || e.mode < 0) invalid(p, `mode ${e.mode} is not a non-negative integer`);
  if (!Number.isSafeInteger(e.uid) || e.uid < 0) invalid(p, `uid ${e.uid} is not a non-negative integer`);
  if (!Number.isSafeInteger(e.gid) || e.gid < 0) invalid(p, `gid ${e.gid} is not a non-negative integer`);
  if (!(e.mtime instanceof Date) || Number.isNaN(e.mtime.getTime())) invalid(p, "mtime is not a valid Date");
  if (e.type === "file") {
    if (e.size === undefined || !Number.isSafeInteger(e.size) || e.size < 0) invalid(p, "a file needs a non-negative integer size");
    if (e.size > 0 && e.open === undefined && e.content === undefined) invalid(p, "a non-empty file needs open()");
    const at = e.contentAt ?? 0;
    if (e.content !== undefined && (!Number.isSafeInteger(at) || at < 0 || at + e.size > e.content.length)) {
      invalid(p, `content of ${e.content.length} bytes from ${at} for a size of ${e.size}`);
    }
  }
  if (e.type === "symlink" || e.type === "hardlink") {
    if (typeof e.linkname !== "string" || e.linkname === "") invalid(p, `a ${e.type} needs a linkname`);
    if (e.linkname.includes("\0")) invalid(p, "linkname contains a NUL byte");
    // A hardlink names another entry of the layer, so its target obeys the path rules.
    if (e.type === "hardlink") checkPath(p, e.linkname, "hardlink target");
  }
  if (e.type === "char" || e.type === "block") {
    for (const [k, v] of [["devmajor", e.devmajor ?? 0], ["devminor", e.devminor ?? 0]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > octalMax(8)) invalid(p, `${k} ${v} is out of range`);
    }
  }
  for (const k of Object.keys(e.xattrs ?? {})) {
    if (k === "" || k.includes("=") || k.includes("\0")) invalid(p, `xattr name ${JSON.stringify(k)} cannot be stored in a PAX record`);
  }
}

/** One PAX record, "<len> <key>=<value>\n", where <len> counts the whole record in bytes. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), "utf8"), body]);
}

/** Truncate to at most `width` ASCII bytes (non-ASCII replaced), for fields a PAX record overrides. */
function asciiFit(s: string, width: number): string {
  if (s.length <= width && isAscii(s)) return s;
  return s.replace(/[^\x20-\x7e]/g, "_").slice(0, width);
}

export interface HeaderFields {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

/** `s` into `h` at `off`, at most `width` bytes of it; the sum of its bytes. Self-contained (see ustarInto). */
function putString(h: Uint8Array, off: number, width: number, s: string): number {
  const n = Math.min(s.length, width);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i) & 0xff;
    h[off + i] = c;
    sum += c;
  }
  return sum;
}

/**
 * `n` (a non-negative integer that fits) into `h` at `off`, as width - 1 octal digits
 * and a NUL; the sum of the bytes. Self-contained (see ustarInto).
 */
function putOctal(h: Uint8Array, off: number, width: number, n: number): number {
  let sum = 0;
  for (let i = off + width - 2; i >= off; i--) {
    const c = 0x30 + (n % 8);
    h[i] = c;
    sum += c;
    n = Math.floor(n / 8);
  }
  h[off + width - 1] = 0;
  return sum;
}

/**
 * The ustar header of `f`, written into the 512 bytes of `h` at `at`, which must be
 * zeros: fields are written byte by byte (callers pass ASCII that fits, see asciiFit: one
 * byte a character; a binding call per field cost more than a short name's bytes), empty
 * ones skipped, and the checksum (the sum of the header's bytes, its own field counted
 * as spaces) summed as they are written. It and the functions it calls use nothing else
 * outside their bodies: the file readers run their source (ustarCode, fs/file-read-worker.ts).
 */
export function ustarInto(f: HeaderFields, h: Uint8Array, at: number): void {
  // The checksum field counted as eight spaces.
  let sum = 8 * 0x20;
  sum += putString(h, at, 100, f.name);
  sum += putOctal(h, at + 100, 8, f.mode);
  sum += putOctal(h, at + 108, 8, f.uid);
  sum += putOctal(h, at + 116, 8, f.gid);
  sum += putOctal(h, at + 124, 12, f.size);
  sum += putOctal(h, at + 136, 12, f.mtime);
  sum += putString(h, at + 156, 1, f.typeflag);
  if (f.linkname !== "") sum += putString(h, at + 157, 100, f.linkname);
  // The magic "ustar\0" and the version "00".
  sum += putString(h, at + 257, 5, "ustar") + putString(h, at + 263, 2, "00");
  if (f.uname !== "") sum += putString(h, at + 265, 32, f.uname);
  if (f.gname !== "") sum += putString(h, at + 297, 32, f.gname);
  sum += putOctal(h, at + 329, 8, f.devmajor);
  sum += putOctal(h, at + 337, 8, f.devminor);
  putOctal(h, at + 148, 7, sum);
  h[at + 155] = 0x20;
}

/** The source of ustarInto and fitsUstar with what they call: function declarations, for a worker's program. */
export function ustarCode(): string {
  return [putString, putOctal, ustarInto, fitsUstar].map(String).join("\n");
}

/**
 * Whether a regular file's header is one ustar block (headerParts makes no PAX record
 * for it) when it has no xattrs and no user or group name: a printable-ASCII path of
 * at most 100 bytes, ids of at most 7 octal digits, a size and an mtime (whole seconds)
 * of at most 11. Self-contained, as ustarInto (the workers that pack small files ask it).
 */
export function fitsUstar(path: string, uid: number, gid: number, size: number, mtimeSec: number): boolean {
  if (path.length > 100 || uid > 0o7777777 || gid > 0o7777777 || size > 0o77777777777 || mtimeSec < 0 || mtimeSec > 0o77777777777) return false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

function ustarHeader(f: HeaderFields): Buffer {
  const h = Buffer.alloc(BLOCK);
  ustarInto(f, h, 0);
  return h;
}

function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return rem === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rem);
}

/** The ustar fields of an entry, and the PAX records for what they cannot carry exactly. */
function headerParts(e: LayerEntry, mtimeSec: number): { fields: HeaderFields; pax: Map<string, Buffer> | undefined } {
  const size = e.type === "file" ? (e.size ?? 0) : 0;
  const name = e.type === "directory" ? `${e.path}/` : e.path;
  const linkname = e.type === "symlink" || e.type === "hardlink" ? (e.linkname ?? "") : "";
  const uname = e.uname ?? "";
  const gname = e.gname ?? "";
  // Made only for an entry that needs records (most need none).
  let pax: Map<string, Buffer> | undefined;
  // Printable ASCII has one byte a character, so its length is its byte length.
  if (!isAscii(name) || name.length > 100) (pax ??= new Map()).set("path", Buffer.from(name, "utf8"));
  if (!isAscii(linkname) || linkname.length > 100) (pax ??= new Map()).set("linkpath", Buffer.from(linkname, "utf8"));
  if (e.uid > octalMax(8)) (pax ??= new Map()).set("uid", Buffer.from(String(e.uid)));
  if (e.gid > octalMax(8)) (pax ??= new Map()).set("gid", Buffer.from(String(e.gid)));
  if (size > octalMax(12)) (pax ??= new Map()).set("size", Buffer.from(String(size)));
  if (mtimeSec < 0 || mtimeSec > octalMax(12)) (pax ??= new Map()).set("mtime", Buffer.from(String(mtimeSec)));
  if (!isAscii(uname) || uname.length > 32) (pax ??= new Map()).set("uname", Buffer.from(uname, "utf8"));
  if (!isAscii(gname) || gname.length > 32) (pax ??= new Map()).set("gname", Buffer.from(gname, "utf8"));
  if (e.xattrs !== undefined) for (const [k, v] of Object.entries(e.xattrs)) (pax ??= new Map()).set(`SCHILY.xattr.${k}`, Buffer.from(v));

  const fields = {
    name: asciiFit(name, 100),
    mode: e.mode & 0o7777,
    uid: Math.min(e.uid, octalMax(8)),
    gid: Math.min(e.gid, octalMax(8)),
    size: Math.min(size, octalMax(12)),
    mtime: Math.min(Math.max(mtimeSec, 0), octalMax(12)),
    typeflag: TYPEFLAG[e.type],
    linkname: asciiFit(linkname, 100),
    uname: asciiFit(uname, 32),
    gname: asciiFit(gname, 32),
    devmajor: e.devmajor ?? 0,
    devminor: e.devminor ?? 0,
  };
  return { fields, pax };
}

/** The PAX extended header and its records for `pax` (not empty), then the ustar header. */
function withPax(e: LayerEntry, fields: HeaderFields, pax: Map<string, Buffer>): Buffer {
  const keys = [...pax.keys()].sort();
  const body = Buffer.concat(keys.map((k) => paxRecord(k, pax.get(k)!)));
  // The extended header's own name is informational; derive it from the entry, never from the host.
  const slash = e.path.lastIndexOf("/");
  const paxName = asciiFit(`${slash < 0 ? "" : e.path.slice(0, slash + 1)}PaxHeaders.0/${e.path.slice(slash + 1)}`, 100);
  const xheader = ustarHeader({
    name: paxName,
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: 0,
    typeflag: "x",
    linkname: "",
    uname: "",
    gname: "",
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([xheader, body, padding(body.length), ustarHeader(fields)]);
}

/**
 * The header block(s) for an entry: an optional PAX extended header with its
 * records, then the ustar header. `mtimeSec` is the (already clamped) mtime in
 * whole seconds. Returns the bytes to write before the entry's content.
 */
export function encodeHeader(e: LayerEntry, mtimeSec: number): Buffer {
  const { fields, pax } = headerParts(e, mtimeSec);
  return pax === undefined ? ustarHeader(fields) : withPax(e, fields, pax);
}

/**
 * encodeHeader without a buffer of its own when the entry needs no PAX records: the
 * ustar header is written into `target` at `at` (512 bytes of zeros there) and its
 * length returned. An entry with PAX records gets its header blocks as a buffer.
 */
export function encodeHeaderInto(e: LayerEntry, mtimeSec: number, target: Buffer, at: number): number | Buffer {
  const { fields, pax } = headerParts(e, mtimeSec);
  if (pax !== undefined) return withPax(e, fields, pax);
  ustarInto(fields, target, at);
  return BLOCK;
}
