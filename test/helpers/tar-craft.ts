/**
 * Hand-made tar blocks for hostile-input tests: every header field can hold
 * anything (a non-octal size, a base-256 number, a type flag no writer uses),
 * and the checksum is computed over whatever was put in, so the reader gets past
 * it and meets the field itself.
 */

export interface RawHeader {
  name?: string;
  /** The type flag character ("0", "x", "L"...). */
  flag?: string;
  mode?: string | Buffer;
  uid?: string | Buffer;
  gid?: string | Buffer;
  /** The size field as written: an octal string, or raw bytes (base-256). */
  size?: string | Buffer | number;
  mtime?: string | Buffer;
  linkname?: string;
  devmajor?: string | Buffer;
  devminor?: string | Buffer;
  /** "ustar\0" + "00" (default), or anything else. */
  magic?: string;
}

export const BLOCK = 512;

function put(block: Buffer, at: number, width: number, v: string | Buffer): void {
  const b = typeof v === "string" ? Buffer.from(v, "latin1") : v;
  b.copy(block, at, 0, Math.min(width, b.length));
}

/** A 512-byte header with a correct checksum over the given fields. */
export function header(h: RawHeader): Buffer {
  const block = Buffer.alloc(BLOCK);
  put(block, 0, 100, h.name ?? "file");
  put(block, 100, 8, h.mode ?? "0000644\0");
  put(block, 108, 8, h.uid ?? "0000000\0");
  put(block, 116, 8, h.gid ?? "0000000\0");
  const size = typeof h.size === "number" ? `${h.size.toString(8).padStart(11, "0")}\0` : (h.size ?? "00000000000\0");
  put(block, 124, 12, size);
  put(block, 136, 12, h.mtime ?? "14707030000\0");
  block[156] = (h.flag ?? "0").charCodeAt(0);
  put(block, 157, 100, h.linkname ?? "");
  put(block, 257, 8, h.magic ?? "ustar\x0000");
  put(block, 329, 8, h.devmajor ?? "0000000\0");
  put(block, 337, 8, h.devminor ?? "0000000\0");
  return withChecksum(block);
}

/** Recompute a header block's checksum in place (after its bytes were changed). */
export function withChecksum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i]!;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return block;
}

/** `data` padded with zeros to a whole number of blocks. */
export function padded(data: Buffer): Buffer {
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return pad === 0 ? data : Buffer.concat([data, Buffer.alloc(pad)]);
}

/** One PAX record, "<len> key=value\n", with its own length counted. */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const kv = Buffer.concat([Buffer.from(` ${key}=`), typeof value === "string" ? Buffer.from(value) : value, Buffer.from("\n")]);
  let len = kv.length + 1;
  while (String(len).length + kv.length !== len) len = String(len).length + kv.length;
  return Buffer.concat([Buffer.from(String(len)), kv]);
}

/** A PAX extended header (flag "x", or "g" for global) holding these records, padded. */
export function paxHeader(records: Record<string, string | Buffer>, flag: "x" | "g" = "x"): Buffer {
  const body = Buffer.concat(Object.entries(records).map(([k, v]) => paxRecord(k, v)));
  return Buffer.concat([header({ name: "PaxHeaders/x", flag, size: body.length }), padded(body)]);
}

/** A GNU long name ("L") or long link ("K") record, padded. */
export function gnuLong(flag: "L" | "K", value: string): Buffer {
  const body = Buffer.from(`${value}\0`);
  return Buffer.concat([header({ name: "././@LongLink", flag, size: body.length, magic: "ustar  \0" }), padded(body)]);
}

/** A regular file entry with its body, padded. */
export function fileEntry(name: string, content: string | Buffer, extra: RawHeader = {}): Buffer {
  const body = typeof content === "string" ? Buffer.from(content) : content;
  return Buffer.concat([header({ name, size: body.length, ...extra }), padded(body)]);
}

/** The end-of-archive marker: two zero blocks. */
export const END = Buffer.alloc(2 * BLOCK);
