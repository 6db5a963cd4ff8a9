/**
 * Which instruction arguments are expanded, and how, exactly as BuildKit's
 * dispatcher does: ENV/LABEL keys and values, COPY/ADD sources, destination,
 * --chown, --chmod (ADD --checksum), heredoc bodies whose delimiter was not
 * quoted (quotes kept literal), WORKDIR, USER, VOLUME, STOPSIGNAL, EXPOSE (with
 * word splitting), RUN --mount field values. RUN/CMD/ENTRYPOINT/SHELL/
 * HEALTHCHECK commands, ONBUILD and MAINTAINER are never expanded; FROM is
 * expanded by planStages; ARG by resolveArgs (a --build-arg wins unexpanded).
 */
import { type ExpandOptions, expandWord, expandWords, runLexer } from "./shell-words.js";
import type { ArgInstr, Heredoc, Instruction } from "./instructions.js";

export interface ExpandContext extends ExpandOptions {
  /** The stage's current environment: ENV values and declared ARGs (of one name, the later set wins). */
  env: Record<string, string>;
}

/** A copy of `instr` with BuildKit's expansion applied. Throws OcibuildError DOCKERFILE_EXPANSION. */
export function expandInstruction<T extends Instruction>(instr: T, ctx: ExpandContext): T {
  const w = (s: string) => expandWord(s, ctx.env, ctx);
  const opt = (s: string | undefined) => (s === undefined ? undefined : w(s));
  const i = instr as Instruction;
  switch (i.kind) {
    case "env":
    case "label":
      return { ...i, pairs: i.pairs.map((p) => ({ key: w(p.key), value: w(p.value) })) } as T;
    case "copy":
    case "add": {
      const copy = {
        ...i,
        sources: i.sources.map(w),
        dest: w(i.dest),
        chown: opt(i.chown),
        chmod: opt(i.chmod),
        heredocs: i.heredocs.map((h) => expandHeredoc(h, ctx)),
      };
      return (i.kind === "add" ? { ...copy, checksum: opt(i.checksum) } : copy) as T;
    }
    case "workdir":
      return { ...i, path: w(i.path) } as T;
    case "user":
      return { ...i, user: w(i.user) } as T;
    case "volume":
      return { ...i, paths: i.paths.map(w) } as T;
    case "stopsignal":
      return { ...i, signal: w(i.signal) } as T;
    case "expose":
      return { ...i, ports: i.ports.flatMap((p) => expandWords(p, ctx.env, ctx)) } as T;
    case "run":
      return { ...i, mounts: i.mounts.map((m) => expandMountFields(m, w)) } as T;
    default:
      return instr;
  }
}

/** COPY/ADD heredoc bodies: expanded only when the delimiter was unquoted; quotes stay literal. */
export function expandHeredoc(h: Heredoc, ctx: ExpandContext): Heredoc {
  if (!h.expand) return h;
  const { result } = runLexer(h.content, ctx.env, {
    escapeToken: "\\",
    skipProcessQuotes: true,
    onUsed: ctx.onUsed,
    onUnset: ctx.onUnset,
  });
  return { ...h, content: result };
}

function expandMountFields(spec: string, w: (s: string) => string): string {
  return spec
    .split(",")
    .map((field) => {
      const eq = field.indexOf("=");
      return eq < 0 ? field : `${field.slice(0, eq)}=${w(field.slice(eq + 1))}`;
    })
    .join(",");
}

export interface ArgScope {
  /** --build-arg values. */
  buildArgs: Record<string, string>;
  /** The stage's globalArgs (from planStages). */
  globalArgs: Record<string, string>;
  /** The stage's current environment, for expanding defaults. */
  env: Record<string, string>;
  escapeToken?: "\\" | "`";
  onUsed?: (name: string) => void;
  onUnset?: (name: string) => void;
}

/**
 * An in-stage ARG's effective values (BuildKit's dispatchArg): a --build-arg wins as
 * given; else the default, expanded with the stage env as it is at that name (so in
 * `ARG A=1 B=$A`, B sees A); with neither, the global ARG of the same name; else no
 * value (value undefined: the variable keeps whatever value it already had).
 */
export function resolveArgs(instr: ArgInstr, scope: ArgScope): { key: string; value?: string }[] {
  const env = { ...scope.env };
  return instr.args.map((a) => {
    let value: string | undefined;
    if (Object.hasOwn(scope.buildArgs, a.key)) value = scope.buildArgs[a.key];
    else if (a.value !== undefined) value = expandWord(a.value, env, scope);
    else if (Object.hasOwn(scope.globalArgs, a.key)) value = scope.globalArgs[a.key];
    if (value === undefined) return { key: a.key };
    env[a.key] = value;
    return { key: a.key, value };
  });
}
