/**
 * The numbers in a tar header and its PAX records, parsed strictly: a layer is
 * hostile until proven otherwise, and a size that is not a whole number in range
 * would leave the reader unable to find the next header (a size of 0.5 once made
 * it spin forever). Every number is either a non-negative integer within its
 * field's range (an mtime may also be negative and, in PAX, have a fraction) or
 * the archive is refused with ROOTFS_TAR_INVALID naming the entry.
 */
import { OcibuildError } from "../../errors.js";

/** Where a bad value was met, for the message: the entry's name (when known) and the header's offset. */
export interface FieldPlace {
  entry?: string;
  offset: number;
}

export function invalidTar(message: string, place?: FieldPlace): OcibuildError {
  const where = place === undefined ? "" : place.entry !== undefined ? `entry "${place.entry}": ` : `header at byte ${place.offset}: `;
  return new OcibuildError("ROOTFS_TAR_INVALID", `the layer is not a valid tar archive: ${where}${message}`, {
    details: place === undefined ? undefined : { ...(place.entry !== undefined ? { entry: place.entry } : {}), offset: place.offset },
  });
}

/** The inclusive range a numeric field may hold. */
export interface FieldRange {
  min: number;
  max: number;
}

/** uid and gid: 32 bits, without (uid_t)-1, which chown reads as "leave unchanged". */
export const ID_RANGE: FieldRange = { min: 0, max: 0xfffffffe };
export const SIZE_RANGE: FieldRange = { min: 0, max: Number.MAX_SAFE_INTEGER };
export const DEV_RANGE: FieldRange = { min: 0, max: 0xffffffff };
export const MODE_RANGE: FieldRange = { min: 0, max: 0o7777777 };
/** Seconds a JavaScript Date can hold either side of the epoch. */
export const TIME_RANGE: FieldRange = { min: -8.64e12, max: 8.64e12 };

function inRange(v: number, range: FieldRange): boolean {
  return Number.isSafeInteger(v) && v >= range.min && v <= range.max;
}

/** Where the text of b[start, end) ends: its first NUL, or `end`. (A loop: cheaper than Buffer#indexOf for a header's short fields.) */
function nulAt(b: Buffer, start: number, end: number): number {
  for (let i = start; i < end; i++) if (b[i] === 0) return i;
  return end;
}

/** A header field up to its first NUL. */
export function cstr(b: Buffer): Buffer {
  const z = nulAt(b, 0, b.length);
  return z === b.length ? b : b.subarray(0, z);
}

/** The UTF-8 text of the header field b[start, end), up to its first NUL. */
export function fieldText(b: Buffer, start: number, end: number): string {
  return b.toString("utf8", start, nulAt(b, start, end));
}

/** GNU base-256: big-endian two's complement, the first byte's high bit the marker. */
function base256(b: Buffer): bigint {
  let v = BigInt(b[0]! & 0x7f);
  for (let i = 1; i < b.length; i++) v = (v << 8n) | BigInt(b[i]!);
  // A negative number has the bit below the marker set as well (0xff...): sign-extend.
  if ((b[0]! & 0x40) !== 0) v -= 1n << BigInt(b.length * 8 - 1);
  return v;
}

/**
 * The octal number in b[start, end) with spaces and NULs around it, read byte by
 * byte (every header has eight numbers: no string, regex or slice for each);
 * undefined for anything else (base-256, stray characters), which headerNumber
 * then reads or refuses.
 */
function plainOctal(b: Buffer, start: number, end: number): number | undefined {
  let i = start;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++, digits++) {
    const c = b[i]!;
    if (c < 0x30 || c > 0x37) break;
    v = v * 8 + (c - 0x30);
  }
  for (; i < end; i++) if (b[i] !== 0x20 && b[i] !== 0) return undefined;
  // Twelve octal digits are 36 bits: v is exact (a longer field goes the careful way).
  return digits <= 12 ? v : undefined;
}

/** headerNumber() of the field b[at, at + width). */
export function headerNumberAt(b: Buffer, at: number, width: number, field: string, range: FieldRange, place: FieldPlace): number {
  const v = plainOctal(b, at, at + width);
  if (v !== undefined && inRange(v, range)) return v;
  return headerNumber(b.subarray(at, at + width), field, range, place);
}

/** A numeric header field: octal text (spaces and NULs around it allowed) or GNU base-256. */
export function headerNumber(b: Buffer, field: string, range: FieldRange, place: FieldPlace): number {
  if (b.length > 0 && (b[0]! & 0x80) !== 0) {
    const v = base256(b);
    if (v < BigInt(range.min) || v > BigInt(range.max)) throw invalidTar(`${field} ${v} is out of range`, place);
    return Number(v);
  }
  const s = b.toString("latin1").replace(/^[ \0]+|[ \0]+$/g, "");
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw invalidTar(`${field} "${cstr(b).toString("latin1")}" is not an octal number`, place);
  const v = parseInt(s, 8);
  if (!inRange(v, range)) throw invalidTar(`${field} ${v} is out of range`, place);
  return v;
}

/** A PAX integer record (size, uid, gid): decimal digits only, within range. */
export function paxInteger(value: string, key: string, range: FieldRange, place: FieldPlace): number {
  const v = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!inRange(v, range)) throw invalidTar(`PAX ${key} "${value.slice(0, 40)}" is not a whole number from ${range.min} to ${range.max}`, place);
  return v;
}

/** A PAX time record (mtime): seconds since the epoch, optionally signed and with a fraction; in milliseconds. */
export function paxTimeMs(value: string, key: string, place: FieldPlace): number {
  const m = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(value);
  const seconds = m ? Number(m[2]) : NaN;
  if (!m || !(seconds <= TIME_RANGE.max)) throw invalidTar(`PAX ${key} "${value.slice(0, 40)}" is not a time in seconds`, place);
  const ms = seconds * 1000 + Number(`0.${m[3] ?? ""}0`) * 1000;
  return Math.floor(m[1] === "-" ? -ms : ms);
}
