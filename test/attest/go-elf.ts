/**
 * A minimal ELF64 executable image holding Go 1.18+ build info, laid out as the
 * Go linker lays it out: a read-only/executable segment, then a writable data
 * segment starting with the `.go.buildinfo` blob (magic, pointer size, flags
 * "strings inline", padding, uvarint-length version and framed module info).
 * Used where no Go toolchain is installed to build a real binary with modules.
 */

const MAGIC = Buffer.from("\xff Go buildinf:", "latin1");
const INFO_START = Buffer.from("3077af0c9274080241e1c107e6d618e6", "hex");
const INFO_END = Buffer.from("f932433186182072008242104116d8f2", "hex");

function uvarint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

/** The `.go.buildinfo` blob for a toolchain version and module info text. */
export function buildInfoBlob(goVersion: string, modinfo: string): Buffer {
  const header = Buffer.alloc(32);
  MAGIC.copy(header);
  header[14] = 8;
  header[15] = 0x2;
  const v = Buffer.from(goVersion);
  const m = Buffer.concat([INFO_START, Buffer.from(modinfo), INFO_END]);
  return Buffer.concat([header, uvarint(v.length), v, uvarint(m.length), m]);
}

export interface GoElfOptions {
  goVersion: string;
  modinfo: string;
  /** A second, valid-looking blob in the read-only segment (as the `go` binary carries one as a constant). */
  decoy?: { goVersion: string; modinfo: string };
  /** Bytes of filler in the read-only segment (to push the data segment past a chunk size). */
  textSize?: number;
}

/** An ELF64 little-endian image: header, two PT_LOAD program headers, text (with the decoy), data (with the build info). */
export function goElf(o: GoElfOptions): Buffer {
  const ehdr = Buffer.alloc(64);
  ehdr.writeUInt32BE(0x7f454c46, 0);
  ehdr[4] = 2; // 64-bit
  ehdr[5] = 1; // little-endian
  ehdr[6] = 1;
  ehdr.writeUInt16LE(2, 16); // ET_EXEC
  ehdr.writeUInt16LE(0x3e, 18); // x86-64
  ehdr.writeUInt32LE(1, 20);
  ehdr.writeBigUInt64LE(64n, 0x20); // e_phoff
  ehdr.writeUInt16LE(64, 0x34); // e_ehsize
  ehdr.writeUInt16LE(56, 0x36); // e_phentsize
  ehdr.writeUInt16LE(2, 0x38); // e_phnum
  const textStart = 64 + 2 * 56;
  const decoy = o.decoy ? buildInfoBlob(o.decoy.goVersion, o.decoy.modinfo) : Buffer.alloc(0);
  // The decoy sits at a 16-byte-aligned offset too: only the segment rule keeps it out.
  const pad1 = Buffer.alloc((16 - (textStart % 16)) % 16);
  const text = Buffer.concat([pad1, decoy, Buffer.alloc(o.textSize ?? 256, 0x90)]);
  const dataStart = Math.ceil((textStart + text.length) / 4096) * 4096;
  const gap = Buffer.alloc(dataStart - textStart - text.length);
  const data = Buffer.concat([buildInfoBlob(o.goVersion, o.modinfo), Buffer.alloc(64)]);
  const phdr = (flags: number, offset: number, size: number) => {
    const p = Buffer.alloc(56);
    p.writeUInt32LE(1, 0); // PT_LOAD
    p.writeUInt32LE(flags, 4);
    p.writeBigUInt64LE(BigInt(offset), 8);
    p.writeBigUInt64LE(BigInt(0x400000 + offset), 16);
    p.writeBigUInt64LE(BigInt(0x400000 + offset), 24);
    p.writeBigUInt64LE(BigInt(size), 32);
    p.writeBigUInt64LE(BigInt(size), 40);
    p.writeBigUInt64LE(4096n, 48);
    return p;
  };
  const ph = Buffer.concat([phdr(5, 0, textStart + text.length), phdr(6, dataStart, data.length)]);
  return Buffer.concat([ehdr, ph, text, gap, data]);
}
