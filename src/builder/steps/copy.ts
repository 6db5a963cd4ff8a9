/**
 * COPY (and ADD of local files): Docker's copy rules, executed into the stage's
 * merged root so that the layer is exactly what changed.
 *  - sources relative to the context (or to --from's root), never outside it;
 *    wildcards; a directory source copies its contents; .dockerignore applies.
 *  - destination relative to WORKDIR; a trailing "/" (or several sources) means a
 *    directory; missing parents are created (owned like --chown, as BuildKit does).
 *  - context files belong to 0:0 unless --chown; files from another stage or image
 *    keep their owner; mtimes are kept; --chmod applies to files and directories.
 */
import { constants as fsc } from "node:fs";
import { chmod, copyFile, lchown, lstat, lutimes, mkdir, readdir, readlink, rm, symlink } from "node:fs/promises";
import type { Stats } from "node:fs";
import { basename, join, posix } from "node:path";
import { OcibuildError } from "../../errors.js";
import { createIgnoreMatcher, expandWord, parseDockerignore, type AddInstr, type CopyInstr, type IgnoreMatcher } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { parseChmod, type ModeFn } from "../chmod.js";
import { mutateRoot, withRootView } from "../fs.js";
import { resolveDirInRoot, resolveNoFollow } from "../rootfs-path.js";
import { selectSources, type SourceMatch, type SourceTree } from "../sources.js";
import { addHistory, addLayer, expansionEnv, workdirOf, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { resolveUser } from "../users.js";

interface Owner {
  uid: number;
  gid: number;
}

interface CopyPlan {
  owner?: Owner; // undefined: keep the source's (stages/images) or 0:0 (context)
  contextSource: boolean;
  modeFn?: ModeFn;
  exclude?: IgnoreMatcher;
}

/** The expanded text of the instruction, as history records it. */
export function copyText(instr: CopyInstr | AddInstr, sources: string[], dest: string): string {
  const flags: string[] = [];
  if (instr.from !== undefined) flags.push(`--from=${instr.from}`);
  if (instr.chown !== undefined) flags.push(`--chown=${instr.chown}`);
  if (instr.chmod !== undefined) flags.push(`--chmod=${instr.chmod}`);
  if (instr.link) flags.push("--link");
  if (instr.parents) flags.push("--parents");
  for (const e of instr.excludes) flags.push(`--exclude=${e}`);
  return [instr.kind.toUpperCase(), ...flags, ...sources, dest].join(" ");
}

export async function copyStep(state: StageState, instr: CopyInstr | AddInstr, ctx: StepContext): Promise<StageState> {
  const env = expansionEnv(state);
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail = (code: string, msg: string, hint?: string) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  const expand = (w: string) => expandWord(w, env);
  const sources = instr.sources.map(expand);
  const destRaw = expand(instr.dest);
  const chown = instr.chown !== undefined ? expand(instr.chown) : undefined;
  const chmodSpec = instr.chmod !== undefined ? expand(instr.chmod) : undefined;
  const from = instr.from !== undefined ? expand(instr.from) : undefined;
  const text = copyText(instr, sources, destRaw);

  if (instr.kind === "add") {
    const remote = sources.find((s) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s) || s.startsWith("git@"));
    if (remote !== undefined) throw fail("BUILD_UNSUPPORTED", `ADD of a remote source (${remote}) is not supported yet`);
  }
  if (instr.heredocs.length > 0) throw fail("BUILD_UNSUPPORTED", `${instr.kind.toUpperCase()} with a heredoc source is not supported yet`);

  const dest = posix.isAbsolute(destRaw) ? destRaw : posix.join(workdirOf(state), destRaw);
  const destIsDir = destRaw.endsWith("/") || destRaw === "." || destRaw.endsWith("/.");
  let modeFn: ModeFn | undefined;
  try {
    modeFn = chmodSpec !== undefined ? parseChmod(chmodSpec) : undefined;
  } catch (e) {
    throw fail("BUILD_CHMOD_INVALID", (e as Error).message);
  }
  const exclude = instr.excludes.length > 0 ? createIgnoreMatcher(parseDockerignore(instr.excludes.map(expand).join("\n"))) : undefined;

  const run = async (tree: SourceTree, contextSource: boolean): Promise<StageState> => {
    const matches: SourceMatch[][] = [];
    for (const s of sources) {
      const m = (await selectSources(tree, s)).filter((x) => !exclude || !exclude.ignores(x.rel));
      if (m.length === 0) {
        const hint = contextSource ? "check the path, and that .dockerignore does not exclude it" : undefined;
        throw fail("BUILD_COPY_SOURCE_NOT_FOUND", `${instr.kind.toUpperCase()} source "${s}" not found in ${tree.label}`, hint);
      }
      matches.push(m);
    }
    const total = matches.reduce((n, m) => n + m.length, 0);
    if ((sources.length > 1 || total > 1) && !destIsDir) {
      const anyFile = matches.flat().some((m) => !m.stats.isDirectory());
      if (anyFile || sources.length > 1) {
        throw fail("BUILD_COPY_DEST_NOT_DIR", `when copying more than one source, the destination "${destRaw}" must be a directory ending in "/"`);
      }
    }
    const layer = await mutateRoot(state, ctx, async (root) => {
      let owner: Owner | undefined;
      if (chown !== undefined) owner = await chownOwner(root, chown);
      else if (contextSource) owner = { uid: 0, gid: 0 };
      const plan: CopyPlan = { owner, contextSource, modeFn, exclude };
      for (const list of matches) {
        for (const m of list) await copyOne(tree, m, root, dest, destIsDir || sources.length > 1 || total > 1, instr.parents, plan, ctx.signal);
      }
    });
    const entry = { created_by: `${text} # ocibuild`, comment: "ocibuild.dockerfile.v0" };
    return layer ? addLayer(state, layer, entry) : addHistory(state, { ...entry, empty_layer: true });
  };

  if (from === undefined) return run(ctx.context, true);
  const stage = ctx.stage(from);
  const srcState = stage ? await stage : await ctx.image(from, state.platform);
  return withRootView(srcState, ctx, (root) => run({ root, label: stage ? `stage ${from}` : `image ${from}` }, false));
}

async function chownOwner(root: string, spec: string): Promise<Owner> {
  const u = await resolveUser(root, spec);
  // Docker: a user without a group (name or uid) uses the uid as the gid.
  return spec.includes(":") ? { uid: u.uid, gid: u.gid } : { uid: u.uid, gid: u.uid };
}

function splitPath(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

async function copyOne(
  tree: SourceTree,
  m: SourceMatch,
  root: string,
  dest: string,
  destIsDir: boolean,
  parents: boolean,
  plan: CopyPlan,
  signal?: AbortSignal,
): Promise<void> {
  let destComps = splitPath(dest);
  if (parents) destComps = [...destComps, ...splitPath(m.rel)];
  const created = async (hostPath: string) => {
    if (plan.owner) await lchown(hostPath, plan.owner.uid, plan.owner.gid);
  };
  if (m.stats.isDirectory()) {
    // A directory source: its contents go into dest (created as a directory).
    const target = await resolveDirInRoot(root, destComps, { create: true, onCreate: created });
    await applyMeta(target!.hostPath, m.stats, plan, true);
    await copyTree(tree, m.hostPath, m.rel, target!.hostPath, plan, signal);
    return;
  }
  let fileComps: string[];
  if (parents) fileComps = destComps;
  else {
    const existing = await resolveNoFollow(root, destComps).catch(() => null);
    const intoDir = destIsDir || (existing !== null && existing.stats.isDirectory()) || destComps.length === 0;
    fileComps = intoDir ? [...destComps, basename(m.rel || m.hostPath)] : destComps;
  }
  const parent = await resolveDirInRoot(root, fileComps.slice(0, -1), { create: true, onCreate: created });
  await copyEntry(m.hostPath, m.stats, join(parent!.hostPath, fileComps[fileComps.length - 1]!), plan);
}

async function copyTree(tree: SourceTree, srcDir: string, rel: string, dstDir: string, plan: CopyPlan, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const names = (await readdir(srcDir)).sort();
  for (const name of names) {
    const childRel = rel === "" ? name : `${rel}/${name}`;
    if (plan.contextSource && tree.ignore?.ignores(childRel)) {
      const st = await lstat(join(srcDir, name));
      // An ignored directory may still hold re-included paths ("!dir/keep").
      if (!st.isDirectory() || !tree.ignore.mayMatchUnder(childRel)) continue;
    }
    if (plan.exclude?.ignores(childRel)) continue;
    const src = join(srcDir, name);
    const st = await lstat(src);
    const dst = join(dstDir, name);
    if (st.isDirectory()) {
      const existing = await lstat(dst).catch(() => null);
      if (existing && !existing.isDirectory()) await rm(dst, { force: true });
      if (!existing || !existing.isDirectory()) await mkdir(dst);
      await copyTree(tree, src, childRel, dst, plan, signal);
      await applyMeta(dst, st, plan, true);
    } else {
      await copyEntry(src, st, dst, plan);
    }
  }
}

async function copyEntry(src: string, st: Stats, dst: string, plan: CopyPlan): Promise<void> {
  const existing = await lstat(dst).catch(() => null);
  if (existing?.isDirectory()) {
    throw new OcibuildError("BUILD_COPY_OVER_DIRECTORY", `cannot copy the file "${src}" over the existing directory "${dst}"`);
  }
  if (existing) await rm(dst, { force: true });
  if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dst);
    await applyMeta(dst, st, plan, false, true);
    return;
  }
  if (st.isFile()) {
    await copyFile(src, dst, fsc.COPYFILE_FICLONE);
    await applyMeta(dst, st, plan, false);
    return;
  }
  // Sockets, fifos and device nodes in a source tree are not copied.
}

async function applyMeta(path: string, st: Stats, plan: CopyPlan, isDir: boolean, isLink = false): Promise<void> {
  const uid = plan.owner ? plan.owner.uid : st.uid;
  const gid = plan.owner ? plan.owner.gid : st.gid;
  await lchown(path, uid, gid);
  if (!isLink) {
    const mode = plan.modeFn ? plan.modeFn(st.mode & 0o7777, isDir) : st.mode & 0o7777;
    await chmod(path, mode);
  }
  await lutimes(path, st.atime, st.mtime);
}
