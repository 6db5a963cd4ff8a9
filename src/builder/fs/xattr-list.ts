/**
 * Reading a file's extended attributes from its list and get calls, shared by the main
 * thread (native.ts getXattrs, by path) and the file readers' workers (file-read-worker.ts,
 * by open descriptor), which run its source: it uses nothing outside its body.
 */

/** The buffers readXattrs reads names and values into (grown as needed; kept between calls). */
export interface XattrBuffers {
  names: Buffer;
  value: Buffer;
}

/** Buffers for readXattrs. The kernel allocates (and zeroes) as much as it is offered on every call, so a small first offer is the cheap one: 64 KiB each time cost twice the call. */
export function xattrBuffers(): XattrBuffers {
  return { names: Buffer.allocUnsafe(256), value: Buffer.allocUnsafe(256) };
}

/**
 * The extended attributes that `list` (llistxattr/flistxattr: NUL-ended names into a
 * buffer) and `get` (lgetxattr/fgetxattr: a value by NUL-ended name) give, each handed
 * to `found` (the value's bytes are only valid during that call), without the names
 * that start with one of `skip`. Both return a length or -errno; while one says ERANGE
 * (-`erange`), it is asked for the size with an empty buffer and the buffer grown. A
 * list that fails is no attribute, and so is a value removed since it was listed.
 */
export function readXattrs(
  list: (b: Buffer) => number,
  get: (nameZ: Buffer, b: Buffer) => number,
  skip: readonly string[],
  erange: number,
  bufs: XattrBuffers,
  found: (name: string, value: Buffer) => void,
): void {
  const fill = (key: "names" | "value", call: (b: Buffer) => number): number => {
    let n = call(bufs[key]);
    while (n === -erange && (n = call(Buffer.alloc(0))) >= 0) {
      bufs[key] = Buffer.allocUnsafe(Math.max(n, bufs[key].length * 2));
      n = call(bufs[key]);
    }
    return n;
  };
  const n = fill("names", list);
  for (let start = 0; start < n; ) {
    const names = bufs.names;
    const end = names.indexOf(0, start);
    const name = names.toString("utf8", start, end);
    const nameZ = names.subarray(start, end + 1);
    start = end + 1;
    if (skip.some((s) => name.startsWith(s))) continue;
    const m = fill("value", (b) => get(nameZ, b));
    if (m >= 0) found(name, bufs.value.subarray(0, m));
  }
}
