/**
 * A minimal protocol-buffers wire codec (proto3): just what the BuildKit client
 * needs. Writing: varints, length-delimited fields, embedded messages, maps.
 * Reading: a field iterator over a buffer; unknown fields are skipped, as the
 * protobuf rules require, so a newer daemon's extra fields do no harm.
 */
import { OcibuildError } from "../../../errors.js";

const enum WireType {
  Varint = 0,
  Fixed64 = 1,
  Bytes = 2,
  Fixed32 = 5,
}

/** Builds one message. Fields are written in the order the caller adds them. */
export class ProtoWriter {
  private readonly parts: Buffer[] = [];

  private tag(field: number, wire: WireType): void {
    this.varint(BigInt((field << 3) | wire));
  }

  private varint(v: bigint): void {
    // proto3 int64 negatives are ten-byte two's complement varints.
    let n = v < 0n ? v + (1n << 64n) : v;
    const bytes: number[] = [];
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n !== 0n) b |= 0x80;
      bytes.push(b);
    } while (n !== 0n);
    this.parts.push(Buffer.from(bytes));
  }

  /** int32/int64/uint32/enum; proto3 leaves zero out. */
  int(field: number, v: number | bigint | undefined): this {
    if (v === undefined || v === 0 || v === 0n) return this;
    this.tag(field, WireType.Varint);
    this.varint(BigInt(v));
    return this;
  }

  bool(field: number, v: boolean | undefined): this {
    if (!v) return this;
    this.tag(field, WireType.Varint);
    this.varint(1n);
    return this;
  }

  bytes(field: number, v: Uint8Array | undefined): this {
    if (v === undefined) return this;
    this.tag(field, WireType.Bytes);
    this.varint(BigInt(v.length));
    this.parts.push(Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    return this;
  }

  /** A string field; proto3 leaves the empty string out. */
  string(field: number, v: string | undefined): this {
    if (v === undefined || v === "") return this;
    return this.bytes(field, Buffer.from(v, "utf8"));
  }

  strings(field: number, vs: readonly string[] | undefined): this {
    // Repeated strings keep empty entries (an empty argv word is meaningful).
    for (const v of vs ?? []) this.bytes(field, Buffer.from(v, "utf8"));
    return this;
  }

  /** An embedded message; written even when empty (presence matters for messages). */
  message(field: number, m: ProtoWriter | undefined): this {
    if (m === undefined) return this;
    return this.bytes(field, m.finish());
  }

  /** map<string, string>: each entry an embedded message {1: key, 2: value}, in sorted key order. */
  stringMap(field: number, m: Readonly<Record<string, string>> | undefined): this {
    for (const k of Object.keys(m ?? {}).sort()) {
      const entry = new ProtoWriter();
      entry.bytes(1, Buffer.from(k, "utf8")).bytes(2, Buffer.from(m![k]!, "utf8"));
      this.message(field, entry);
    }
    return this;
  }

  /** map<string, Message>, sorted by key. */
  messageMap(field: number, m: ReadonlyMap<string, ProtoWriter>): this {
    for (const k of [...m.keys()].sort()) {
      const entry = new ProtoWriter();
      entry.bytes(1, Buffer.from(k, "utf8")).message(2, m.get(k));
      this.message(field, entry);
    }
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface ProtoField {
  field: number;
  wire: number;
  /** Varint value (wire 0). */
  varint: bigint;
  /** Payload (wire 2), or the raw bytes of a fixed field. */
  data: Buffer;
}

function malformed(what: string): OcibuildError {
  return new OcibuildError("BUILDKIT_PROTOCOL", `malformed protobuf message from the BuildKit daemon: ${what}`);
}

/** Iterate the fields of one encoded message. */
export function* readFields(buf: Uint8Array): Generator<ProtoField> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  const readVarint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= b.length) throw malformed("truncated varint");
      const byte = b[pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) throw malformed("varint too long");
    }
  };
  while (pos < b.length) {
    const key = Number(readVarint());
    const field = key >>> 3;
    const wire = key & 7;
    switch (wire) {
      case WireType.Varint:
        yield { field, wire, varint: readVarint(), data: Buffer.alloc(0) };
        break;
      case WireType.Bytes: {
        const len = Number(readVarint());
        if (pos + len > b.length) throw malformed(`field ${field} runs past the end`);
        yield { field, wire, varint: 0n, data: b.subarray(pos, pos + len) };
        pos += len;
        break;
      }
      case WireType.Fixed64:
        if (pos + 8 > b.length) throw malformed("truncated fixed64");
        yield { field, wire, varint: 0n, data: b.subarray(pos, pos + 8) };
        pos += 8;
        break;
      case WireType.Fixed32:
        if (pos + 4 > b.length) throw malformed("truncated fixed32");
        yield { field, wire, varint: 0n, data: b.subarray(pos, pos + 4) };
        pos += 4;
        break;
      default:
        throw malformed(`unsupported wire type ${wire}`);
    }
  }
}

/** Signed int64 from a varint field. */
export function toInt(v: bigint): number {
  return Number(BigInt.asIntN(64, v));
}

/** Decode a map<string,string> entry. */
export function readMapEntry(data: Buffer): [string, string] {
  let k = "";
  let v = "";
  for (const f of readFields(data)) {
    if (f.field === 1) k = f.data.toString("utf8");
    else if (f.field === 2) v = f.data.toString("utf8");
  }
  return [k, v];
}

/** google.protobuf.Timestamp {1: seconds, 2: nanos} as a Date. */
export function readTimestamp(data: Buffer): Date {
  let seconds = 0;
  let nanos = 0;
  for (const f of readFields(data)) {
    if (f.field === 1) seconds = toInt(f.varint);
    else if (f.field === 2) nanos = toInt(f.varint);
  }
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}
