/** A directory tree as comparable text, for tests that compare two builds' root filesystems. */
import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";

/** path -> "type mode uid:gid" plus the link target or (with `withContent`) a content hash. */
export async function describeTree(root: string, withContent = true): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(p);
      let what = "other";
      if (st.isDirectory()) what = "dir";
      else if (st.isSymbolicLink()) what = `link ${await readlink(p)}`;
      else if (st.isFile()) what = withContent ? `file ${createHash("sha256").update(await readFile(p)).digest("hex").slice(0, 16)}` : "file";
      out.set(r, `${what} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
      if (st.isDirectory()) await walk(p, r);
    }
  };
  await walk(root, "");
  return out;
}

/** Every path whose description differs, named with the two sides' labels. */
export function treeDifferences(a: Map<string, string>, b: Map<string, string>, labels: [string, string]): string[] {
  const out: string[] = [];
  for (const [p, v] of a) if (b.get(p) !== v) out.push(`${p}: ${labels[0]} ${v}, ${labels[1]} ${b.get(p) ?? "absent"}`);
  for (const [p, v] of b) if (!a.has(p)) out.push(`${p}: ${labels[0]} absent, ${labels[1]} ${v}`);
  return out;
}
