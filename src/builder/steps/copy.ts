/**
 * COPY (and ADD of local files): Docker's copy rules, executed into the stage's
 * merged root so that the layer is exactly what changed.
 *  - sources relative to the context (or to --from's root), never outside it;
 *    wildcards (one that matches nothing is dropped, unless nothing matched at all);
 *    a directory source copies its contents; .dockerignore applies.
 *  - destination relative to WORKDIR; a trailing "/" (or several sources) means a
 *    directory; missing parents are created 0755 (or an octal --chmod) and owned like
 *    --chown, as BuildKit does.
 *  - context files belong to 0:0 unless --chown; files from another stage or image
 *    keep their owner; mtimes are kept; --chmod applies to files and directories.
 *  - a directory source's contents are copied, not the directory itself: the
 *    destination directory keeps its own mode and owner, or is made 0755.
 */
import { chmod, lchown, lstat, mkdir, rm, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import type { Stats } from "node:fs";
import { basename, join, posix } from "node:path";
import { type ErrorCode, OcibuildError } from "../../errors.js";
import { createIgnoreMatcher, parseDockerignore, type AddInstr, type CopyInstr, type IgnoreMatcher } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { octalChmod, parseChmod, type ModeFn } from "../fs/chmod.js";
import { mutateRoot, withRootView } from "../fs/step-root.js";
import { resolveDirInRoot, resolveNoFollow } from "../fs/path.js";
import { hasWildcard, selectSources, type SourceMatch, type SourceTree } from "../sources.js";
import { workdirOf, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { fileOwner } from "../users.js";
import { applyMeta, copyEntry, copyTree, hashMatches, type CopyPlan, type Owner } from "../fs/copy-tree.js";
import { archiveKind, download, extractArchive, isRemoteSource, type Download } from "./add.js";
import { checkoutGit, parseGitSource } from "./git.js";
import { layerPlan, sourceIdentity, withStepResult, type Step, type StepKeyInputs } from "./step.js";

/** The expanded text of the instruction, as history records it. */
function copyText(instr: CopyInstr | AddInstr, sources: string[], dest: string): string {
  const flags: string[] = [];
  if (instr.from !== undefined) flags.push(`--from=${instr.from}`);
  if (instr.chown !== undefined) flags.push(`--chown=${instr.chown}`);
  if (instr.chmod !== undefined) flags.push(`--chmod=${instr.chmod}`);
  if (instr.link) flags.push("--link");
  if (instr.parents) flags.push("--parents");
  for (const e of instr.excludes) flags.push(`--exclude=${e}`);
  if (instr.kind === "add" && instr.keepGitDir) flags.push("--keep-git-dir");
  if (instr.kind === "add" && instr.checksum !== undefined) flags.push(`--checksum=${instr.checksum}`);
  return [instr.kind.toUpperCase(), ...flags, ...sources, dest].join(" ");
}

/** A COPY/ADD with its arguments expanded and (for the context) its sources selected. */
interface CopyPrep {
  instr: CopyInstr | AddInstr;
  text: string;
  sources: string[];
  destRaw: string;
  dest: string;
  destIsDir: boolean;
  chown?: string;
  modeFn?: ModeFn;
  /** Mode of the directories made on the way to the destination (see madeDir). */
  newDirMode?: number;
  exclude?: IgnoreMatcher;
  from?: string;
  /** The local tree the sources are in: the build context, or the named local context --from names; none for a stage or image. */
  tree?: SourceTree;
  /** Sources in `tree`, selected (per source string). */
  matches?: SourceMatch[][];
  /** COPY <<EOF: file name -> content (already expanded when the delimiter was unquoted). */
  heredocs: { name: string; content: string }[];
  /** ADD of URLs: downloaded files. */
  downloads: Download[];
  /** ADD of git repositories: checked-out trees at a commit. */
  gits: { url: string; commit: string; match: SourceMatch }[];
}

/** `instr` arrives expanded (expandInstruction); --from is never expanded (BuildKit refuses variables there). */
async function prepareCopy(state: StageState, instr: CopyInstr | AddInstr, ctx: StepContext): Promise<CopyPrep> {
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail = (code: ErrorCode, msg: string, hint?: string) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  const sources = instr.sources;
  const destRaw = instr.dest;
  const chown = instr.chown;
  const chmodSpec = instr.chmod;
  const from = instr.from;
  const text = copyText(instr, sources, destRaw);

  const downloads: Download[] = [];
  const gits: CopyPrep["gits"] = [];
  let local = sources;
  if (instr.kind === "add") {
    for (const s of sources) {
      const g = parseGitSource(s);
      if (!g) continue;
      try {
        await mkdir(ctx.scratchDir, { recursive: true });
        const co = await checkoutGit(g, ctx.gitCacheDir, ctx.scratchDir, instr.keepGitDir ?? false, ctx.signal);
        if (instr.checksum !== undefined && !co.commit.startsWith(instr.checksum.replace(/^sha1:/, ""))) {
          throw new OcibuildError("BUILD_ADD_CHECKSUM_MISMATCH", `ADD ${s}: resolved to commit ${co.commit}, but --checksum says ${instr.checksum}`);
        }
        gits.push({ url: s, commit: co.commit, match: { rel: "", realRel: "", hostPath: co.dir, stats: await lstat(co.dir) } });
      } catch (e) {
        if (e instanceof OcibuildError) throw fail(e.code, e.message, e.hint);
        throw e;
      }
    }
    local = sources.filter((s) => !isRemoteSource(s) && !parseGitSource(s));
    for (const url of sources.filter((s) => isRemoteSource(s) && !parseGitSource(s))) {
      try {
        await mkdir(ctx.scratchDir, { recursive: true });
        downloads.push(await download(url, ctx.scratchDir, instr.checksum, { env: ctx.registry.options.env, signal: ctx.signal }));
      } catch (e) {
        if (e instanceof OcibuildError) throw fail(e.code, e.message);
        throw e;
      }
    }
  } else {
    const url = sources.find((s) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s));
    if (url !== undefined) throw fail("DOCKERFILE_COPY_URL", `COPY cannot fetch ${url}; use ADD for URLs`);
  }

  const dest = posix.isAbsolute(destRaw) ? destRaw : posix.join(workdirOf(state), destRaw);
  // Sources that are sure to remain: a wildcard that matches nothing is dropped (selectAll).
  const count = sources.filter((s) => !local.includes(s) || !hasWildcard(s)).length + instr.heredocs.length;
  const destIsDir = destRaw.endsWith("/") || destRaw === "." || destRaw.endsWith("/.") ;
  let modeFn: ModeFn | undefined;
  try {
    modeFn = chmodSpec !== undefined ? parseChmod(chmodSpec) : undefined;
  } catch (e) {
    throw fail("BUILD_CHMOD_INVALID", (e as Error).message);
  }
  const exclude = instr.excludes.length > 0 ? createIgnoreMatcher(parseDockerignore(instr.excludes.join("\n"))) : undefined;
  const heredocs = instr.heredocs.map((h) => ({ name: h.name, content: h.content }));
  if (count > 1 && !destIsDir) {
    throw fail("BUILD_COPY_DEST_NOT_DIR", `when copying more than one source, the destination "${destRaw}" must be a directory ending in "/"`);
  }
  const newDirMode = chmodSpec !== undefined ? octalChmod(chmodSpec) : undefined;
  const tree = from === undefined ? ctx.context : ctx.localContext?.(from);
  const prep: CopyPrep = { instr, text, sources: local, destRaw, dest, destIsDir, chown, modeFn, newDirMode, exclude, from, tree, heredocs, downloads, gits };
  if (tree) prep.matches = await selectAll(prep, tree, true, ctx);
  return prep;
}

async function selectAll(prep: CopyPrep, tree: SourceTree, contextSource: boolean, ctx: StepContext): Promise<SourceMatch[][]> {
  const { instr } = prep;
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail = (code: ErrorCode, msg: string, hint?: string) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  const hint = contextSource ? "check the path, and that .dockerignore does not exclude it" : undefined;
  const matches: SourceMatch[][] = [];
  const unmatched: string[] = [];
  for (const s of prep.sources) {
    const m = (await selectSources(tree, s)).filter((x) => !prep.exclude || !prep.exclude.ignores(x.rel));
    if (m.length > 0) matches.push(m);
    // A wildcard that matches nothing is dropped (Docker, kaniko); a missing path is an error.
    else if (hasWildcard(s)) unmatched.push(s);
    else throw fail("BUILD_COPY_SOURCE_NOT_FOUND", `${instr.kind.toUpperCase()} source "${s}" not found in ${tree.label}`, hint);
  }
  const remaining = matches.length + otherSources(prep);
  if (remaining === 0) {
    const names = unmatched.map((s) => `"${s}"`).join(", ");
    throw fail("BUILD_COPY_SOURCE_NOT_FOUND", `${instr.kind.toUpperCase()} source ${names} matched nothing in ${tree.label}`, hint);
  }
  const total = matches.reduce((n, m) => n + m.length, 0);
  if ((remaining > 1 || total > 1) && !prep.destIsDir) {
    const anyFile = matches.flat().some((m) => !m.stats.isDirectory());
    if (anyFile || remaining > 1) {
      throw fail("BUILD_COPY_DEST_NOT_DIR", `when copying more than one source, the destination "${prep.destRaw}" must be a directory ending in "/"`);
    }
  }
  return matches;
}

/** Sources besides the local ones: heredocs, downloads, git checkouts. */
function otherSources(prep: CopyPrep): number {
  return prep.heredocs.length + prep.downloads.length + prep.gits.length;
}

/**
 * The content part of a COPY's cache key: for context sources (the build context's, or
 * a named local context's, their names prefixed with the context's), a hash of every
 * file the copy reads (path, type, mode, link target, bytes; never mtime), walked
 * exactly as the copy walks; for --from a stage or image, its identity.
 */
async function copyKeyFiles(prep: CopyPrep, tree: SourceTree, ctx: StepContext, hashFile: (path: string, st: Stats) => Promise<string>): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const h of prep.heredocs) files[`<<${h.name}`] = createHash("sha256").update(h.content).digest("hex");
  for (const d of prep.downloads) files[d.url] = d.sha256;
  for (const g of prep.gits) files[`git ${g.url}`] = g.commit;
  for (const d of prep.downloads) ctx.materials?.add({ uri: d.url, digest: { sha256: d.sha256 } });
  for (const g of prep.gits) ctx.materials?.add({ uri: g.url, digest: { sha1: g.commit } });
  // A directory source's own mode never reaches the image, unless --parents recreates it below the destination.
  const opts = { exclude: prep.exclude, signal: ctx.signal, contentsOnly: !prep.instr.parents };
  const hashed = await hashMatches(tree, (prep.matches ?? []).flat(), hashFile, opts);
  for (const [k, v] of Object.entries(hashed)) files[`${tree.keyPrefix ?? ""}${k}`] = v;
  return files;
}

async function executeCopy(state: StageState, prep: CopyPrep, ctx: StepContext): Promise<StageState> {
  const run = async (tree: SourceTree, contextSource: boolean, matches: SourceMatch[][]): Promise<StageState> => {
    const total = matches.reduce((n, m) => n + m.length, 0);
    const layer = await mutateRoot(state, ctx, async (root) => {
      let owner: Owner | undefined;
      if (prep.chown !== undefined) owner = await fileOwner(root, prep.chown, { signal: ctx.signal });
      else if (contextSource) owner = { uid: 0, gid: 0 };
      const plan: CopyPlan = { owner, contextSource, modeFn: prep.modeFn, newDirMode: prep.newDirMode, exclude: prep.exclude, extract: prep.instr.kind === "add" ? { owner: prep.chown !== undefined ? owner : undefined } : undefined };
      const intoDir = prep.destIsDir || matches.length + otherSources(prep) > 1 || total > 1;
      for (const list of matches) {
        for (const m of list) await copyOne(tree, m, root, prep.dest, intoDir, prep.instr.parents, plan, ctx.signal);
      }
      const created = plan.owner ? { ...plan, extract: undefined } : { ...plan, owner: { uid: 0, gid: 0 }, extract: undefined };
      for (const d of prep.downloads) await copyOne(tree, d.match, root, prep.dest, intoDir, false, created, ctx.signal);
      for (const h of prep.heredocs) await writeHeredoc(root, prep, h, created);
      for (const g of prep.gits) await copyOne({ root: g.match.hostPath, label: g.url }, g.match, root, prep.dest, true, false, { ...created, contextSource: false }, ctx.signal);
    });
    return withStepResult(state, layer, { created_by: `${prep.text} # ocibuild`, comment: "ocibuild.dockerfile.v0" });
  };

  if (prep.tree) return run(prep.tree, true, prep.matches ?? []);
  const from = prep.from!;
  const stage = ctx.stage(from);
  const srcState = stage ? await stage : await ctx.image(from, state.platform);
  return withRootView(srcState, ctx, async (root) => {
    const tree: SourceTree = { root, label: stage ? `stage ${from}` : `image ${from}` };
    return run(tree, false, await selectAll(prep, tree, false, ctx));
  });
}

/**
 * COPY and ADD: the key holds the expanded text, the working directory, and what is
 * copied: the content of every context file, download and git commit, or the
 * identity of the --from stage or image. COPY --link does not chain on the layers below.
 */
export const copyStep: Step<CopyInstr | AddInstr> = {
  layered: true,
  async plan(state, instr, env) {
    const prep = await prepareCopy(state, instr, env.ctx);
    const inputs: StepKeyInputs = { ...(instr.link ? { parent: "link", base: "link" } : {}), instruction: prep.text, workdir: workdirOf(state) };
    if (prep.tree) inputs.files = await copyKeyFiles(prep, prep.tree, env.ctx, env.keys.hashFile);
    else inputs.source = await sourceIdentity(prep.from!, state, env);
    // From the context, without downloads or checkouts: local work (StepPlan.local).
    const local = prep.tree !== undefined && prep.downloads.length === 0 && prep.gits.length === 0;
    return layerPlan(state, inputs, prep.text, () => (instr.link ? linkedCopy(state, prep, env.ctx) : executeCopy(state, prep, env.ctx)), local);
  },
};

/**
 * COPY --link: copy onto an empty tree and put the result on top of the stage as
 * an independent layer (BuildKit's semantics). Names in --chown are resolved in
 * the stage's own /etc/passwd first, since the empty tree has none.
 */
async function linkedCopy(state: StageState, prep: CopyPrep, ctx: StepContext): Promise<StageState> {
  let p = prep;
  if (prep.chown !== undefined && !/^\d+(:\d+)?$/.test(prep.chown)) {
    const spec = prep.chown;
    const ids = await withRootView(state, ctx, async (root) => {
      const o = await fileOwner(root, spec, { signal: ctx.signal });
      return `${o.uid}:${o.gid}`;
    });
    p = { ...prep, chown: ids };
  }
  const alone = await executeCopy({ ...state, layers: [], history: [] }, p, ctx);
  return withStepResult(state, alone.layers[0], alone.history[alone.history.length - 1]!);
}

/**
 * What a directory made on the way to the destination gets: the --chown owner, and mode
 * 0755, or an octal --chmod's mode (BuildKit does so since v0.21; a symbolic one leaves 0755).
 */
function madeDir(plan: CopyPlan, mode = plan.newDirMode ?? 0o755): (hostPath: string) => Promise<void> {
  return async (hostPath) => {
    if (plan.owner) await lchown(hostPath, plan.owner.uid, plan.owner.gid);
    await chmod(hostPath, mode);
  };
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
  const created = madeDir(plan);
  if (m.stats.isDirectory()) {
    // A directory source: its contents go into dest. dest itself is not a copied entry
    // (BuildKit): made 0755 (owned like --chown) when missing, else left as it is. Only
    // with --parents is the source directory one of the entries below the destination.
    const target = await resolveDirInRoot(root, destComps, { create: true, onCreate: created });
    await copyTree(tree, m, target!.hostPath, plan, signal);
    if (parents && m.rel !== "") applyMeta(target!.hostPath, m.stats, plan, true);
    return;
  }
  if (plan.extract && m.stats.isFile()) {
    const kind = await archiveKind(m.hostPath);
    if (kind !== undefined) {
      // (BuildKit makes an archive's destination 0755 whatever --chmod says.)
      const target = await resolveDirInRoot(root, destComps, { create: true, onCreate: madeDir(plan, 0o755) });
      await extractArchive(m.hostPath, kind, target!.hostPath, { owner: plan.extract.owner, signal });
      return;
    }
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

/** COPY <<NAME dest: the body becomes a file (0644 unless --chmod), named NAME when dest is a directory. */
async function writeHeredoc(root: string, prep: CopyPrep, h: { name: string; content: string }, plan: CopyPlan): Promise<void> {
  const destComps = splitPath(prep.dest);
  const existing = await resolveNoFollow(root, destComps).catch(() => null);
  const intoDir = prep.destIsDir || (existing !== null && existing.stats.isDirectory()) || destComps.length === 0;
  const comps = intoDir ? [...destComps, h.name] : destComps;
  const parent = await resolveDirInRoot(root, comps.slice(0, -1), { create: true, onCreate: madeDir(plan) });
  const path = join(parent!.hostPath, comps[comps.length - 1]!);
  const old = await lstat(path).catch(() => null);
  if (old?.isDirectory()) throw new OcibuildError("BUILD_COPY_OVER_DIRECTORY", `cannot write the heredoc ${h.name} over the directory ${prep.dest}`);
  if (old) await rm(path, { force: true });
  await writeFile(path, h.content, { mode: 0o644 });
  await lchown(path, plan.owner?.uid ?? 0, plan.owner?.gid ?? 0);
  await chmod(path, plan.modeFn ? plan.modeFn(0o644, false) : 0o644);
}

