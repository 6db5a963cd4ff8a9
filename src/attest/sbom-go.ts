/**
 * Go build information, read from an executable as it streams past: Go 1.18+
 * writes a 32-byte header starting `\xff Go buildinf:` (then the pointer size,
 * flags with bit 1 set for "strings inline", padding), followed by two
 * uvarint-length strings, the toolchain version and the module info, at the start
 * of the `.go.buildinfo` section in the writable data segment. Like Go's own
 * debug/buildinfo, a header counts only at a 16-byte-aligned offset, and here,
 * when the ELF program headers say where the writable segments are, only inside
 * one (the magic also appears as a constant in the read-only data of any binary
 * that reads build info, such as `go` itself). Older Go (pointer-format headers)
 * and non-ELF files are not read.
 */

const MAGIC = Buffer.from("\xff Go buildinf:", "latin1");
const ALIGN = 16;
const HEADER = 32;
const FLAG_INLINE = 0x2;
/** The longest module info read (a large binary's is tens of KiB). */
export const MAX_GO_MODINFO = 1 << 20;
/** ELF program headers further into the file than this are not waited for. */
const MAX_ELF_HEAD = 64 * 1024;

export interface GoModule {
  path: string;
  version: string;
  sum?: string;
}

export interface GoBuildInfo {
  /** "go1.22.1", or "devel ..." */
  goVersion: string;
  /** The main package's import path. */
  path?: string;
  /** The main module; absent for a binary built outside module mode. */
  main?: GoModule;
  deps: GoModule[];
}

type Parse = { state: "more" } | { state: "bad" } | { state: "ok"; info: GoBuildInfo };

function uvarint(buf: Buffer, at: number): { value: number; next: number } | "more" | "bad" {
  let value = 0;
  for (let i = 0, shift = 0; i < 5; i++, shift += 7) {
    if (at + i >= buf.length) return "more";
    const b = buf[at + i]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return { value, next: at + i + 1 };
  }
  return "bad";
}

/** The header and its two strings at the start of `buf`, if they are there and well-formed. */
export function parseBuildInfoBlob(buf: Buffer): Parse {
  if (buf.length < HEADER) return { state: "more" };
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) return { state: "bad" };
  const ptrSize = buf[14];
  if ((ptrSize !== 4 && ptrSize !== 8) || (buf[15]! & FLAG_INLINE) === 0) return { state: "bad" };
  const strings: Buffer[] = [];
  let at = HEADER;
  for (const max of [256, MAX_GO_MODINFO]) {
    const n = uvarint(buf, at);
    if (n === "more" || n === "bad") return { state: n };
    if (n.value > max) return { state: "bad" };
    if (n.next + n.value > buf.length) return { state: "more" };
    strings.push(buf.subarray(n.next, n.next + n.value));
    at = n.next + n.value;
  }
  const goVersion = strings[0]!.toString("utf8");
  const framed = strings[1]!;
  if (!/^(go1|devel )/.test(goVersion)) return { state: "bad" };
  // The module info is framed by two 16-byte sentinels (cmd/go's infoStart and infoEnd).
  const framedOk = framed.length >= 33 && framed[framed.length - 17] === 0x0a;
  return { state: "ok", info: parseModInfo(goVersion, framedOk ? framed.toString("utf8", 16, framed.length - 16) : "") };
}

/** `go version -m`'s text: path, mod, dep and `=>` (replacement) lines, tab-separated. */
export function parseModInfo(goVersion: string, text: string): GoBuildInfo {
  const info: GoBuildInfo = { goVersion, deps: [] };
  let last: GoModule | undefined;
  for (const line of text.split("\n")) {
    const [kind, path, version, sum] = line.split("\t");
    if (kind === "path" && path) info.path = path;
    else if ((kind === "mod" || kind === "dep") && path) {
      last = { path, version: version ?? "", sum: sum || undefined };
      if (kind === "mod") info.main = last;
      else info.deps.push(last);
    } else if (kind === "=>" && path && last) {
      // A replaced module: what was built is the replacement.
      Object.assign(last, { path, version: version ?? "", sum: sum || undefined });
    }
  }
  return info;
}

/** The file ranges of an ELF's writable, non-executable loadable segments, or undefined when `head` is not ELF. */
function elfWritableRanges(head: Buffer): Array<[number, number]> | "more" | undefined {
  if (head.length < 4) return "more";
  if (head.readUInt32BE(0) !== 0x7f454c46) return undefined;
  if (head.length < 64) return "more";
  const is64 = head[4] === 2;
  const le = head[5] !== 2;
  const u16 = (o: number) => (le ? head.readUInt16LE(o) : head.readUInt16BE(o));
  const u32 = (o: number) => (le ? head.readUInt32LE(o) : head.readUInt32BE(o));
  const u64 = (o: number) => Number(le ? head.readBigUInt64LE(o) : head.readBigUInt64BE(o));
  const phoff = is64 ? u64(0x20) : u32(0x1c);
  const entSize = u16(is64 ? 0x36 : 0x2a);
  const count = u16(is64 ? 0x38 : 0x2c);
  const end = phoff + entSize * count;
  if (entSize < (is64 ? 56 : 32) || end > MAX_ELF_HEAD) return [[0, Number.MAX_SAFE_INTEGER]];
  if (head.length < end) return "more";
  const ranges: Array<[number, number]> = [];
  for (let i = 0; i < count; i++) {
    const p = phoff + i * entSize;
    const flags = u32(is64 ? p + 4 : p + 24);
    const offset = is64 ? u64(p + 8) : u32(p + 4);
    const size = is64 ? u64(p + 32) : u32(p + 16);
    if (u32(p) === 1 && (flags & 3) === 2) ranges.push([offset, offset + size]);
  }
  return ranges.length > 0 ? ranges : [[0, Number.MAX_SAFE_INTEGER]];
}

/**
 * Feeds an executable's bytes through, chunk by chunk, keeping only the ELF
 * head, a few bytes across chunk boundaries, and a candidate header while its
 * strings arrive. `push` answers false once nothing more is needed.
 */
export class GoBuildInfoScanner {
  private head: Buffer | undefined = Buffer.alloc(0) as Buffer;
  private ranges: Array<[number, number]> = [];
  /** Bytes not yet searched (from a candidate on, while one is being read), starting at file offset `base`. */
  private pending: Buffer = Buffer.alloc(0);
  private base = 0;
  private done = false;
  result: GoBuildInfo | undefined;

  push(chunk: Buffer): boolean {
    if (this.done) return false;
    if (this.head !== undefined) return this.pushHead(chunk);
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.search();
    return !this.done;
  }

  private pushHead(chunk: Buffer): boolean {
    const head = Buffer.concat([this.head!, chunk]);
    const ranges = elfWritableRanges(head);
    if (ranges === "more" && head.length < MAX_ELF_HEAD) {
      this.head = head;
      return true;
    }
    this.head = undefined;
    if (ranges === undefined || ranges === "more") {
      this.done = true;
      return false;
    }
    this.ranges = ranges;
    return this.push(head);
  }

  private inData(offset: number): boolean {
    return offset % ALIGN === 0 && this.ranges.some(([a, b]) => offset >= a && offset + HEADER <= b);
  }

  private search(): void {
    let from = 0;
    for (;;) {
      const i = this.pending.indexOf(MAGIC, from);
      if (i === -1) break;
      if (this.inData(this.base + i)) {
        const r = parseBuildInfoBlob(this.pending.subarray(i));
        if (r.state === "ok") {
          this.result = r.info;
          this.done = true;
          this.pending = Buffer.alloc(0);
          return;
        }
        if (r.state === "more" && this.pending.length - i <= HEADER + 16 + MAX_GO_MODINFO) {
          this.keepFrom(i);
          return;
        }
      }
      from = i + 1;
    }
    // Keep what could be the start of a magic split across chunks.
    this.keepFrom(Math.max(0, this.pending.length - (MAGIC.length - 1)));
  }

  private keepFrom(i: number): void {
    this.base += i;
    this.pending = Buffer.from(this.pending.subarray(i));
  }
}
