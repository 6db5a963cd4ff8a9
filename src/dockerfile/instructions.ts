/**
 * Typed Dockerfile instructions: one discriminated union keyed on `kind`.
 * Every instruction carries its source range and its original text; values are
 * raw (unexpanded) unless a field says otherwise. The builder expands them with
 * shell-words.ts at the point BuildKit does.
 */

/** 1-based, inclusive line range of an instruction in its Dockerfile. */
export interface SourceRange {
  startLine: number;
  endLine: number;
}

/** A here-document attached to RUN/COPY/ADD (`<<EOF`). */
export interface Heredoc {
  /** The delimiter word, without quotes or `-`. */
  name: string;
  /**
   * Body text: the lines after the instruction up to the delimiter, each with its line
   * ending. In typed instructions, leading tabs are already stripped for `<<-`; the AST
   * (Node.heredocs) keeps the raw text, as BuildKit's parser does.
   */
  content: string;
  /** False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no variable expansion. */
  expand: boolean;
  /** True for `<<-EOF` (leading tabs stripped). */
  chomp: boolean;
}

/** RUN/CMD/ENTRYPOINT command: shell form keeps the raw text, exec form the JSON array. */
export type CommandForm = { form: "shell"; text: string } | { form: "exec"; args: string[] };

interface Base {
  range: SourceRange;
  /** The instruction's source text as written, continuation lines joined (BuildKit's `original`). */
  original: string;
  /** All flags as written (`--name=value` -> name: value; bare `--link` -> "true"), raw. */
  flags: Record<string, string | string[]>;
}

export interface FromInstr extends Base {
  kind: "from";
  image: string;
  stageName?: string;
  platform?: string;
}

export interface RunInstr extends Base {
  kind: "run";
  /** Never expanded by the builder (the shell does it); exec form is the JSON array. */
  command: CommandForm;
  heredocs: Heredoc[];
  mounts: string[];
  network?: string;
  security?: string;
}

export interface CmdInstr extends Base {
  kind: "cmd";
  command: CommandForm;
}

export interface EntrypointInstr extends Base {
  kind: "entrypoint";
  command: CommandForm;
}

interface CopyLike extends Base {
  /** Source paths (raw); here-document sources (`<<EOF`) are in `heredocs` instead, named by their delimiter. */
  sources: string[];
  dest: string;
  from?: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  excludes: string[];
  heredocs: Heredoc[];
}

export interface CopyInstr extends CopyLike {
  kind: "copy";
}

export interface AddInstr extends CopyLike {
  kind: "add";
  checksum?: string;
  keepGitDir?: boolean;
  unpack?: boolean;
}

export interface KeyValue {
  key: string;
  value: string;
}

/** ENV/LABEL pair, raw: quotes and `$VAR`s are resolved by expandInstruction (key and value). */
export interface EnvInstr extends Base {
  kind: "env";
  pairs: KeyValue[];
}

export interface LabelInstr extends Base {
  kind: "label";
  pairs: KeyValue[];
}

export interface ArgInstr extends Base {
  kind: "arg";
  args: { key: string; value?: string }[];
}

export interface ExposeInstr extends Base {
  kind: "expose";
  ports: string[];
}

export interface UserInstr extends Base {
  kind: "user";
  user: string;
}

export interface WorkdirInstr extends Base {
  kind: "workdir";
  path: string;
}

export interface VolumeInstr extends Base {
  kind: "volume";
  paths: string[];
}

export interface StopsignalInstr extends Base {
  kind: "stopsignal";
  signal: string;
}

export interface HealthcheckInstr extends Base {
  kind: "healthcheck";
  /** "NONE", or Docker's form: ["CMD-SHELL", "cmd text"] or ["CMD", arg...]. */
  test: string[] | "NONE";
  interval?: string;
  timeout?: string;
  startPeriod?: string;
  startInterval?: string;
  retries?: string;
}

export interface ShellInstr extends Base {
  kind: "shell";
  shell: string[];
}

export interface OnbuildInstr extends Base {
  kind: "onbuild";
  trigger: Instruction;
  /** The trigger's text as stored in the image config's OnBuild list (e.g. `RUN echo hi`). */
  triggerText: string;
}

export interface MaintainerInstr extends Base {
  kind: "maintainer";
  name: string;
}

export type Instruction =
  | FromInstr
  | RunInstr
  | CmdInstr
  | EntrypointInstr
  | CopyInstr
  | AddInstr
  | EnvInstr
  | ArgInstr
  | LabelInstr
  | ExposeInstr
  | UserInstr
  | WorkdirInstr
  | VolumeInstr
  | StopsignalInstr
  | HealthcheckInstr
  | ShellInstr
  | OnbuildInstr
  | MaintainerInstr;

export type InstructionKind = Instruction["kind"];

/** Every instruction keyword ocibuild knows, lower-case. */
export const INSTRUCTION_NAMES: readonly InstructionKind[] = [
  "from",
  "run",
  "cmd",
  "entrypoint",
  "copy",
  "add",
  "env",
  "arg",
  "label",
  "expose",
  "user",
  "workdir",
  "volume",
  "stopsignal",
  "healthcheck",
  "shell",
  "onbuild",
  "maintainer",
];
