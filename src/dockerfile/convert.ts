/**
 * AST node -> typed instruction, with BuildKit's per-instruction checks
 * (argument counts, flags, heredoc placement, HEALTHCHECK options, ONBUILD
 * triggers). Values stay raw: expansion happens in the builder. One converter
 * per instruction, chosen by its keyword from CONVERTERS.
 */
import type { Node } from "./ast.js";
import { suggest } from "./diagnostics.js";
import { type FlagSpec, type ParsedFlags, parseFlags, parseGoDuration } from "./flags.js";
import {
  type AddInstr,
  type CommandForm,
  type CopyInstr,
  type Heredoc,
  INSTRUCTION_NAMES,
  type Instruction,
  type InstructionKind,
  type KeyValue,
  type SourceRange,
} from "./instructions.js";
import type { ErrorCode } from "../errors.js";
import { LineParseError } from "./line-parsers.js";
import { chompHeredoc, parseHeredocWord } from "./parser.js";
import { trimSpace } from "./text.js";

/** BuildKit's nodeArgs: argument values, with ONBUILD's nested instruction flattened. */
function argsOf(node: Node): string[] {
  const out: string[] = [];
  for (let n = node.next; n !== undefined; n = n.next) {
    if (n.children.length === 0) out.push(n.value);
    else if (n.children.length === 1) out.push(n.children[0]!.value, ...argsOf(n.children[0]!));
  }
  return out;
}

const fail = (code: ErrorCode, message: string, hint?: string): never => {
  throw new LineParseError(code, message, { hint });
};

const exactlyOne = (name: string, args: string[]): string => {
  if (args.length !== 1) fail("DOCKERFILE_ARGUMENTS", `${name} requires exactly one argument`);
  return args[0]!;
};

const atLeastOne = (name: string, args: string[]): void => {
  if (args.length === 0) fail("DOCKERFILE_ARGUMENTS", `${name} requires at least one argument`);
};

const STAGE_NAME = /^[a-z][a-z0-9-_.]*$/;

/** What every instruction carries besides its own fields. */
type Base = { range: SourceRange; original: string; flags: Record<string, string | string[]> };

/** One instruction node being converted: its keyword, its arguments, and what every converter asks of it. */
class NodeInput {
  readonly kind: string;
  readonly upper: string;
  readonly args: string[];
  readonly json: boolean;
  readonly original: string;

  constructor(
    readonly node: Node,
    readonly range: SourceRange,
  ) {
    this.kind = node.value.toLowerCase();
    this.upper = this.kind.toUpperCase();
    this.args = argsOf(node);
    this.json = node.attributes.json === true;
    this.original = trimSpace(node.original);
  }

  /** The instruction's flags, checked against the ones it accepts. */
  flags(spec: FlagSpec): ParsedFlags {
    return parseFlags(this.kind, this.node.flags, spec);
  }

  base(flags: ParsedFlags): Base {
    return { range: this.range, original: this.original, flags: flags.all };
  }

  /** No flags accepted: the base with the flags checked against none. */
  plain(): Base {
    return this.base(this.flags({}));
  }

  command(): CommandForm {
    return this.json ? { form: "exec", args: this.args } : { form: "shell", text: this.args.join(" ") };
  }
}

const CONVERTERS: Readonly<Record<InstructionKind, (c: NodeInput) => Instruction>> = {
  from: convertFrom,
  run: convertRun,
  cmd: (c) => ({ kind: "cmd", ...c.plain(), command: c.command() }),
  entrypoint: (c) => ({ kind: "entrypoint", ...c.plain(), command: c.command() }),
  copy: convertCopy,
  add: convertAdd,
  env: (c) => ({ kind: "env", ...c.plain(), pairs: keyValues(c.args, c.upper) }),
  label: (c) => ({ kind: "label", ...c.plain(), pairs: keyValues(c.args, c.upper) }),
  arg: convertArg,
  expose: convertExpose,
  user: (c) => {
    const user = exactlyOne("USER", c.args);
    return { kind: "user", ...c.plain(), user };
  },
  workdir: (c) => {
    const path = exactlyOne("WORKDIR", c.args);
    return { kind: "workdir", ...c.plain(), path };
  },
  volume: convertVolume,
  // BuildKit does not look at STOPSIGNAL's flags.
  stopsignal: (c) => ({ kind: "stopsignal", range: c.range, original: c.original, flags: {}, signal: exactlyOne("STOPSIGNAL", c.args) }),
  healthcheck: convertHealthcheck,
  shell: convertShell,
  onbuild: convertOnbuild,
  maintainer: (c) => {
    const name = exactlyOne("MAINTAINER", c.args);
    return { kind: "maintainer", ...c.plain(), name };
  },
};

/** Convert one instruction node; `range` is where it sits in the file. Throws LineParseError. */
export function convertNode(node: Node, range: SourceRange): Instruction {
  const kind = node.value.toLowerCase();
  if (Object.hasOwn(CONVERTERS, kind)) return CONVERTERS[kind as InstructionKind](new NodeInput(node, range));
  const names = INSTRUCTION_NAMES.map((n) => n.toUpperCase());
  const near = suggest(node.value, names);
  return fail(
    "DOCKERFILE_UNKNOWN_INSTRUCTION",
    `unknown instruction: ${node.value}`,
    near !== undefined ? `did you mean ${near}?` : `known instructions: ${names.join(", ")}`,
  );
}

function convertFrom(c: NodeInput): Instruction {
  const flags = c.flags({ platform: "string" });
  const args = c.args;
  let stageName: string | undefined;
  if (args.length === 3 && args[1]!.toLowerCase() === "as") {
    stageName = args[2]!.toLowerCase();
    if (!STAGE_NAME.test(stageName)) {
      fail("DOCKERFILE_STAGE_NAME", `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`);
    }
  } else if (args.length !== 1) {
    fail("DOCKERFILE_ARGUMENTS", "FROM requires either one or three arguments", "use FROM image [AS name]");
  }
  return { kind: "from", ...c.base(flags), image: args[0]!, stageName, platform: flags.strings.platform };
}

function convertRun(c: NodeInput): Instruction {
  const flags = c.flags({ mount: "strings", network: "string", security: "string", device: "strings" });
  return {
    kind: "run",
    ...c.base(flags),
    command: c.command(),
    heredocs: c.node.heredocs.map(finishHeredoc),
    mounts: flags.lists.mount ?? [],
    network: flags.strings.network,
    security: flags.strings.security,
  };
}

const COPY_FLAGS: FlagSpec = { chown: "string", from: "string", chmod: "string", link: "bool", exclude: "strings", parents: "bool" };
const ADD_FLAGS: FlagSpec = {
  chown: "string",
  chmod: "string",
  link: "bool",
  "keep-git-dir": "bool",
  checksum: "string",
  unpack: "bool",
  exclude: "strings",
};

/** What COPY and ADD share: sources (here-documents apart), destination and the common flags. */
function copyLike(c: NodeInput, flags: ParsedFlags): Omit<CopyInstr, "kind" | "from" | "parents"> {
  if (c.args.length < 2) {
    fail(
      "DOCKERFILE_ARGUMENTS",
      `${c.upper} requires at least two arguments, but only one was provided. Destination could not be determined`,
      `use ${c.upper} SOURCE... DEST`,
    );
  }
  const dest = c.args[c.args.length - 1]!;
  if (parseHeredocWord(dest) !== undefined) fail("DOCKERFILE_HEREDOC", `${c.upper} cannot accept a heredoc as a destination`);
  const byName = new Map(c.node.heredocs.map((h) => [h.name, h]));
  const sources: string[] = [];
  const heredocs: Heredoc[] = [];
  for (const src of c.args.slice(0, -1)) {
    const h = parseHeredocWord(src);
    if (h === undefined) sources.push(src);
    else {
      const content = byName.get(h.name)?.content ?? "";
      heredocs.push({ ...h, content: h.chomp ? chompHeredoc(content) : content });
    }
  }
  const { chown, chmod } = flags.strings;
  return { ...c.base(flags), sources, dest, chown, chmod, link: flags.bools.link ?? false, excludes: flags.lists.exclude ?? [], heredocs };
}

function convertCopy(c: NodeInput): CopyInstr {
  const flags = c.flags(COPY_FLAGS);
  return { kind: "copy", ...copyLike(c, flags), from: flags.strings.from, parents: flags.bools.parents ?? false };
}

function convertAdd(c: NodeInput): AddInstr {
  const flags = c.flags(ADD_FLAGS);
  return {
    kind: "add",
    ...copyLike(c, flags),
    parents: false,
    checksum: flags.strings.checksum,
    keepGitDir: flags.used.has("keep-git-dir") ? flags.bools["keep-git-dir"] : undefined,
    unpack: flags.used.has("unpack") ? flags.bools.unpack : undefined,
  };
}

function convertArg(c: NodeInput): Instruction {
  const base = c.plain();
  atLeastOne("ARG", c.args);
  const args = c.args.map((a) => {
    const eq = a.indexOf("=");
    if (eq < 0) return { key: a };
    if (eq === 0) fail("DOCKERFILE_ARGUMENTS", "ARG names can not be blank");
    return { key: a.slice(0, eq), value: a.slice(eq + 1) };
  });
  return { kind: "arg", ...base, args };
}

function convertExpose(c: NodeInput): Instruction {
  atLeastOne("EXPOSE", c.args);
  return { kind: "expose", ...c.plain(), ports: c.args };
}

function convertVolume(c: NodeInput): Instruction {
  atLeastOne("VOLUME", c.args);
  const base = c.plain();
  const paths = c.args.map((v) => {
    const t = trimSpace(v);
    if (t === "") fail("DOCKERFILE_ARGUMENTS", "VOLUME specified can not be an empty string");
    return t;
  });
  return { kind: "volume", ...base, paths };
}

function convertShell(c: NodeInput): Instruction {
  const base = c.plain();
  if (c.args.length === 0) fail("DOCKERFILE_ARGUMENTS", "SHELL requires at least one argument");
  if (!c.json) {
    const trailing = c.node.attributes.jsonTrailing;
    const hint = trailing === undefined ? 'use SHELL ["/bin/sh", "-c"]' : `remove the text after the closing ] (${JSON.stringify(trailing)}); a # comment must be on a line of its own`;
    fail("DOCKERFILE_JSON", "SHELL requires the arguments to be in JSON form", hint);
  }
  return { kind: "shell", ...base, shell: c.args };
}

function finishHeredoc(h: Heredoc): Heredoc {
  return h.chomp ? { ...h, content: chompHeredoc(h.content) } : { ...h };
}

function keyValues(args: string[], name: string): KeyValue[] {
  atLeastOne(name, args);
  if (args.length % 3 !== 0) fail("DOCKERFILE_ARGUMENTS", `Bad input to ${name}, too many arguments`);
  const out: KeyValue[] = [];
  for (let j = 0; j < args.length; j += 3) {
    if (args[j]!.length === 0) fail("DOCKERFILE_ARGUMENTS", `${name} names can not be blank`);
    out.push({ key: args[j]!, value: args[j + 1]! });
  }
  return out;
}

const HEALTHCHECK_FLAGS: FlagSpec = { interval: "string", timeout: "string", "start-period": "string", "start-interval": "string", retries: "string" };

function convertHealthcheck(c: NodeInput): Instruction {
  atLeastOne("HEALTHCHECK", c.args);
  const typ = c.args[0]!.toUpperCase();
  const rest = c.args.slice(1);
  if (typ === "NONE") {
    if (rest.length !== 0) fail("DOCKERFILE_ARGUMENTS", "HEALTHCHECK NONE takes no arguments");
    return { kind: "healthcheck", ...c.plain(), test: "NONE" };
  }
  const flags = c.flags(HEALTHCHECK_FLAGS);
  if (typ !== "CMD") fail("DOCKERFILE_HEALTHCHECK", `Unknown type ${JSON.stringify(typ)} in HEALTHCHECK (try CMD)`);
  if (rest.length === 0) fail("DOCKERFILE_HEALTHCHECK", "Missing command after HEALTHCHECK CMD");
  checkHealthcheckFlags(flags);
  return {
    kind: "healthcheck",
    ...c.base(flags),
    test: c.json ? ["CMD", ...rest] : ["CMD-SHELL", rest.join(" ")],
    interval: flags.strings.interval,
    timeout: flags.strings.timeout,
    startPeriod: flags.strings["start-period"],
    startInterval: flags.strings["start-interval"],
    retries: flags.strings.retries,
  };
}

/** HEALTHCHECK's durations and retry count, checked as BuildKit parses them. */
function checkHealthcheckFlags(flags: ParsedFlags): void {
  for (const name of ["interval", "timeout", "start-period", "start-interval"]) {
    const v = flags.strings[name];
    if (v === undefined || v === "") continue;
    const ns = parseGoDuration(v);
    if (ns === undefined) fail("DOCKERFILE_HEALTHCHECK", `time: invalid duration ${JSON.stringify(v)} for --${name}`, "use e.g. 30s, 1m30s, 500ms");
    if (ns! !== 0 && ns! < 1e6) fail("DOCKERFILE_HEALTHCHECK", `Interval "${name}" cannot be less than 1ms`);
  }
  const retries = flags.strings.retries;
  if (retries !== undefined && retries !== "") {
    if (!/^[+-]?[0-9]+$/.test(retries) || Math.abs(Number(retries)) > 2147483647) {
      fail("DOCKERFILE_HEALTHCHECK", `invalid --retries value ${JSON.stringify(retries)}`);
    }
    if (Number(retries) < 0) fail("DOCKERFILE_HEALTHCHECK", `--retries cannot be negative (${Number(retries)})`);
  }
}

function convertOnbuild(c: NodeInput): Instruction {
  const base = c.plain();
  atLeastOne("ONBUILD", c.args);
  const trigger = c.args[0]!.trim().toUpperCase();
  if (trigger === "ONBUILD") fail("DOCKERFILE_ONBUILD", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger === "MAINTAINER" || trigger === "FROM") fail("DOCKERFILE_ONBUILD", `${trigger} isn't allowed as an ONBUILD trigger`);
  let text = c.node.original.replace(/^\s*ONBUILD\s*/i, "");
  for (const h of c.node.heredocs) text += `\n${h.content}${h.name}`;
  const child = c.node.next!.children[0]!;
  const nested = { ...child, heredocs: c.node.heredocs, original: text };
  return { kind: "onbuild", ...base, trigger: convertNode(nested, c.range), triggerText: text };
}
