/**
 * AST node -> typed instruction, with BuildKit's per-instruction checks
 * (argument counts, flags, heredoc placement, HEALTHCHECK options, ONBUILD
 * triggers). Values stay raw: expansion happens in the builder.
 */
import type { Node } from "./ast.js";
import { suggest } from "./diagnostics.js";
import { type FlagSpec, type ParsedFlags, parseFlags, parseGoDuration } from "./flags.js";
import {
  type CommandForm,
  type Heredoc,
  INSTRUCTION_NAMES,
  type Instruction,
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

/** Convert one instruction node; `range` is where it sits in the file. Throws LineParseError. */
export function convertNode(node: Node, range: SourceRange): Instruction {
  const kind = node.value.toLowerCase();
  const args = argsOf(node);
  const json = node.attributes.json === true;
  const original = trimSpace(node.original);
  const flagsFor = (spec: FlagSpec): ParsedFlags => parseFlags(kind, node.flags, spec);
  const base = (flags: ParsedFlags) => ({ range, original, flags: flags.all });
  const commandOf = (): CommandForm => (json ? { form: "exec", args } : { form: "shell", text: args.join(" ") });
  const upper = kind.toUpperCase();

  switch (kind) {
    case "from": {
      const flags = flagsFor({ platform: "string" });
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === "as") {
        stageName = args[2]!.toLowerCase();
        if (!STAGE_NAME.test(stageName)) {
          fail(
            "DOCKERFILE_STAGE_NAME",
            `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`,
          );
        }
      } else if (args.length !== 1) {
        fail("DOCKERFILE_ARGUMENTS", "FROM requires either one or three arguments", "use FROM image [AS name]");
      }
      return { kind, ...base(flags), image: args[0]!, stageName, platform: flags.strings.platform };
    }
    case "run": {
      const flags = flagsFor({ mount: "strings", network: "string", security: "string", device: "strings" });
      return {
        kind,
        ...base(flags),
        command: commandOf(),
        heredocs: node.heredocs.map(finishHeredoc),
        mounts: flags.lists.mount ?? [],
        network: flags.strings.network,
        security: flags.strings.security,
      };
    }
    case "cmd":
    case "entrypoint": {
      const flags = flagsFor({});
      return { kind, ...base(flags), command: commandOf() };
    }
    case "copy":
    case "add": {
      const spec: FlagSpec =
        kind === "copy"
          ? { chown: "string", from: "string", chmod: "string", link: "bool", exclude: "strings", parents: "bool" }
          : {
              chown: "string",
              chmod: "string",
              link: "bool",
              "keep-git-dir": "bool",
              checksum: "string",
              unpack: "bool",
              exclude: "strings",
            };
      const flags = flagsFor(spec);
      if (args.length < 2) {
        fail(
          "DOCKERFILE_ARGUMENTS",
          `${upper} requires at least two arguments, but only one was provided. Destination could not be determined`,
          `use ${upper} SOURCE... DEST`,
        );
      }
      const dest = args[args.length - 1]!;
      if (parseHeredocWord(dest) !== undefined) fail("DOCKERFILE_HEREDOC", `${upper} cannot accept a heredoc as a destination`);
      const byName = new Map(node.heredocs.map((h) => [h.name, h]));
      const sources: string[] = [];
      const inline: Heredoc[] = [];
      for (const src of args.slice(0, -1)) {
        const h = parseHeredocWord(src);
        if (h === undefined) sources.push(src);
        else {
          const content = byName.get(h.name)?.content ?? "";
          inline.push({ ...h, content: h.chomp ? chompHeredoc(content) : content });
        }
      }
      const common = {
        ...base(flags),
        sources,
        dest,
        chown: flags.strings.chown,
        chmod: flags.strings.chmod,
        link: flags.bools.link ?? false,
        excludes: flags.lists.exclude ?? [],
        heredocs: inline,
      };
      if (kind === "copy") return { kind, ...common, from: flags.strings.from, parents: flags.bools.parents ?? false };
      return {
        kind,
        ...common,
        parents: false,
        checksum: flags.strings.checksum,
        keepGitDir: flags.used.has("keep-git-dir") ? flags.bools["keep-git-dir"] : undefined,
        unpack: flags.used.has("unpack") ? flags.bools.unpack : undefined,
      };
    }
    case "env":
    case "label": {
      const flags = flagsFor({});
      return { kind, ...base(flags), pairs: keyValues(args, upper) };
    }
    case "arg": {
      const flags = flagsFor({});
      atLeastOne("ARG", args);
      const pairs = args.map((a) => {
        const eq = a.indexOf("=");
        if (eq < 0) return { key: a };
        if (eq === 0) fail("DOCKERFILE_ARGUMENTS", "ARG names can not be blank");
        return { key: a.slice(0, eq), value: a.slice(eq + 1) };
      });
      return { kind, ...base(flags), args: pairs };
    }
    case "expose": {
      atLeastOne("EXPOSE", args);
      const flags = flagsFor({});
      return { kind, ...base(flags), ports: args };
    }
    case "user": {
      const user = exactlyOne("USER", args);
      return { kind, ...base(flagsFor({})), user };
    }
    case "workdir": {
      const path = exactlyOne("WORKDIR", args);
      return { kind, ...base(flagsFor({})), path };
    }
    case "volume": {
      atLeastOne("VOLUME", args);
      const flags = flagsFor({});
      const paths = args.map((v) => {
        const t = trimSpace(v);
        if (t === "") fail("DOCKERFILE_ARGUMENTS", "VOLUME specified can not be an empty string");
        return t;
      });
      return { kind, ...base(flags), paths };
    }
    case "stopsignal": {
      const signal = exactlyOne("STOPSIGNAL", args);
      return { kind, ...base({ strings: {}, lists: {}, bools: {}, used: new Set(), all: {} }), signal };
    }
    case "healthcheck":
      return convertHealthcheck(node, args, json, base, flagsFor);
    case "shell": {
      const flags = flagsFor({});
      if (args.length === 0) fail("DOCKERFILE_ARGUMENTS", "SHELL requires at least one argument");
      if (!json) {
        const trailing = node.attributes.jsonTrailing;
        const hint = trailing === undefined ? 'use SHELL ["/bin/sh", "-c"]' : `remove the text after the closing ] (${JSON.stringify(trailing)}); a # comment must be on a line of its own`;
        fail("DOCKERFILE_JSON", "SHELL requires the arguments to be in JSON form", hint);
      }
      return { kind, ...base(flags), shell: args };
    }
    case "onbuild":
      return convertOnbuild(node, args, range, base(flagsFor({})));
    case "maintainer": {
      const name = exactlyOne("MAINTAINER", args);
      return { kind, ...base(flagsFor({})), name };
    }
  }
  const near = suggest(node.value, INSTRUCTION_NAMES.map((n) => n.toUpperCase()));
  return fail(
    "DOCKERFILE_UNKNOWN_INSTRUCTION",
    `unknown instruction: ${node.value}`,
    near !== undefined ? `did you mean ${near}?` : `known instructions: ${INSTRUCTION_NAMES.map((n) => n.toUpperCase()).join(", ")}`,
  );
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

function convertHealthcheck(
  node: Node,
  args: string[],
  json: boolean,
  base: (f: ParsedFlags) => { range: SourceRange; original: string; flags: Record<string, string | string[]> },
  flagsFor: (spec: FlagSpec) => ParsedFlags,
): Instruction {
  void node;
  atLeastOne("HEALTHCHECK", args);
  const typ = args[0]!.toUpperCase();
  const rest = args.slice(1);
  if (typ === "NONE") {
    if (rest.length !== 0) fail("DOCKERFILE_ARGUMENTS", "HEALTHCHECK NONE takes no arguments");
    return { kind: "healthcheck", ...base(flagsFor({})), test: "NONE" };
  }
  const flags = flagsFor({
    interval: "string",
    timeout: "string",
    "start-period": "string",
    "start-interval": "string",
    retries: "string",
  });
  if (typ !== "CMD") fail("DOCKERFILE_HEALTHCHECK", `Unknown type ${JSON.stringify(typ)} in HEALTHCHECK (try CMD)`);
  if (rest.length === 0) fail("DOCKERFILE_HEALTHCHECK", "Missing command after HEALTHCHECK CMD");
  const test = json ? ["CMD", ...rest] : ["CMD-SHELL", rest.join(" ")];
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
  return {
    kind: "healthcheck",
    ...base(flags),
    test,
    interval: flags.strings.interval,
    timeout: flags.strings.timeout,
    startPeriod: flags.strings["start-period"],
    startInterval: flags.strings["start-interval"],
    retries: flags.strings.retries,
  };
}

function convertOnbuild(
  node: Node,
  args: string[],
  range: SourceRange,
  base: { range: SourceRange; original: string; flags: Record<string, string | string[]> },
): Instruction {
  atLeastOne("ONBUILD", args);
  const trigger = args[0]!.trim().toUpperCase();
  if (trigger === "ONBUILD") fail("DOCKERFILE_ONBUILD", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger === "MAINTAINER" || trigger === "FROM") fail("DOCKERFILE_ONBUILD", `${trigger} isn't allowed as an ONBUILD trigger`);
  let text = node.original.replace(/^\s*ONBUILD\s*/i, "");
  for (const h of node.heredocs) text += `\n${h.content}${h.name}`;
  const child = node.next!.children[0]!;
  const nested = { ...child, heredocs: node.heredocs, original: text };
  return { kind: "onbuild", ...base, trigger: convertNode(nested, range), triggerText: text };
}
