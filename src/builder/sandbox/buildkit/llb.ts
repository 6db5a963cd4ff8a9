/**
 * LLB (BuildKit's low-level build definition) for one RUN: an image source (the
 * step's input image, staged in a registry) or scratch, an exec op that mounts it
 * writable at "/" and runs the command, and the terminal op naming its output.
 * Encoded by hand from pb.Op / pb.ExecOp / pb.Definition's field numbers. Each op's
 * identity is the sha256 of its encoded bytes, which is how inputs refer to it.
 */
import { digestOf } from "../../../oci/digest.js";
import { encodePlatform, type Platform } from "./messages.js";
import { ProtoWriter } from "./proto.js";

/** pb.NetMode */
export const NetMode = { sandbox: 0, host: 1, none: 2 } as const;
/** pb.MountType */
const MountType = { bind: 0, secret: 1, ssh: 2, cache: 3, tmpfs: 4 } as const;
/** pb.CacheSharingOpt */
const Sharing = { shared: 0, private: 1, locked: 2 } as const;

/** A mount of the exec besides its root (RUN --mount types the daemon provides itself). */
export type LlbMount =
  | { type: "tmpfs"; target: string; size?: number }
  | { type: "cache"; target: string; id: string; sharing: keyof typeof Sharing; readonly?: boolean }
  | { type: "secret"; target: string; id: string; uid: number; gid: number; mode: number; optional: boolean };

/** A secret given to the command as an environment variable (ExecOp.secretenv). */
export interface LlbSecretEnv {
  id: string;
  name: string;
  optional: boolean;
}
/** pb.Mount input/output "none" (InputIndex/OutputIndex -1). */
const NONE = -1;

export interface ExecSpec {
  /** `docker-image://...@sha256:...`, or undefined for scratch. */
  image?: string;
  platform: Platform;
  args: string[];
  env: string[];
  cwd: string;
  /** As in the image config: "", "name", "uid", "name:group", "uid:gid". The daemon resolves it in the root. */
  user: string;
  network: keyof typeof NetMode;
  hostname?: string;
  mounts?: readonly LlbMount[];
  secretEnv?: readonly LlbSecretEnv[];
  /** Shown in the daemon's progress (llb.customname). */
  description?: string;
  /** Run even when the daemon has a cached result for this exact op (default true). */
  ignoreCache?: boolean;
}

export interface LlbDefinition {
  /** Encoded pb.Definition. */
  bytes: Buffer;
  /** Digest of the exec op (the vertex whose logs are the command's output). */
  execDigest: string;
}

function input(digest: string, index = 0): ProtoWriter {
  return new ProtoWriter().string(1, digest).int(2, index);
}

export function execDefinition(spec: ExecSpec): LlbDefinition {
  const ops: Buffer[] = [];
  const metadata = new Map<string, ProtoWriter>();
  const inputs: ProtoWriter[] = [];
  if (spec.image !== undefined) {
    const source = new ProtoWriter().string(1, spec.image);
    const op = new ProtoWriter().message(3, source).message(10, encodePlatform(spec.platform)).finish();
    ops.push(op);
    inputs.push(input(digestOf(op)));
  }
  const meta = new ProtoWriter()
    .strings(1, spec.args)
    .strings(2, spec.env)
    .string(3, spec.cwd)
    .string(4, spec.user)
    .string(7, spec.hostname)
    // Remove mount points the runtime created (and their new parents) from the result.
    .bool(11, (spec.mounts?.length ?? 0) > 0);
  const mounts: ProtoWriter[] = [
    // The root: input 0 (or nothing, for scratch), writable, its result is output 0.
    new ProtoWriter().int(1, spec.image !== undefined ? 0 : NONE).string(3, "/").int(4, 0),
  ];
  for (const m of spec.mounts ?? []) {
    // Not from an input and not an output of the op: the daemon provides these.
    const w = new ProtoWriter().int(1, NONE).string(3, m.target).int(4, NONE);
    if (m.type === "tmpfs") w.int(6, MountType.tmpfs).message(19, new ProtoWriter().int(1, m.size));
    else if (m.type === "cache") w.bool(5, m.readonly).int(6, MountType.cache).message(20, new ProtoWriter().string(1, m.id).int(2, Sharing[m.sharing]));
    else w.int(6, MountType.secret).message(21, new ProtoWriter().string(1, m.id).int(2, m.uid).int(3, m.gid).int(4, m.mode).bool(5, m.optional));
    mounts.push(w);
  }
  const exec = new ProtoWriter().message(1, meta);
  for (const m of mounts) exec.message(2, m);
  exec.int(3, NetMode[spec.network]);
  for (const e of spec.secretEnv ?? []) exec.message(5, new ProtoWriter().string(1, e.id).string(2, e.name).bool(3, e.optional));
  const execOp = new ProtoWriter();
  for (const i of inputs) execOp.message(1, i);
  const execBytes = execOp.message(2, exec).message(10, encodePlatform(spec.platform)).finish();
  ops.push(execBytes);
  const execDigest = digestOf(execBytes);
  // OpMetadata: ignore_cache (ocibuild's cache already decided this step runs, so
  // the daemon must not answer it from its own cache) and the progress name.
  const execMeta = new ProtoWriter().bool(1, spec.ignoreCache ?? true);
  if (spec.description) execMeta.stringMap(2, { "llb.customname": spec.description });
  metadata.set(execDigest, execMeta);
  // The terminal op: only an input, the definition's result.
  ops.push(new ProtoWriter().message(1, input(execDigest)).finish());
  const def = new ProtoWriter();
  for (const op of ops) def.bytes(1, op);
  def.messageMap(2, metadata);
  return { bytes: def.finish(), execDigest };
}
