/**
 * The Dockerfile front end: text -> directives, AST (BuildKit's Node), typed
 * instructions, stage plan; variable expansion; .dockerignore matching.
 * No I/O and no environment reads anywhere below this folder.
 */
export type * from "./instructions.js";
export { INSTRUCTION_NAMES } from "./instructions.js";
export type { Node } from "./ast.js";
export { dumpAst, goQuote, nodeArgs } from "./ast.js";
export type { ParseResult, ParseWarning, ParseOptions, Directives } from "./parse.js";
export { parseDockerfile, parseOnbuildTriggers } from "./parse.js";
export type { AstResult } from "./parser.js";
export { parseAst } from "./parser.js";
export type { ExpandOptions } from "./shell-words.js";
export { expandWord, expandWords } from "./shell-words.js";
export type { Platform, StagePlanOptions, Stage, StagePlan } from "./stages.js";
export { planStages, platformArgs, formatPlatform, PROXY_ARGS } from "./stages.js";
export type { IgnorePattern, IgnoreMatcher } from "./dockerignore.js";
export { parseDockerignore, createIgnoreMatcher, cleanPath, ignoreFileCandidates } from "./dockerignore.js";
export type { ExpandContext, ArgScope } from "./expand.js";
export { expandInstruction, expandHeredoc, resolveArgs } from "./expand.js";
export type { SourceContext } from "./diagnostics.js";
export { dockerfileError, locateError, suggest } from "./diagnostics.js";
export { decodeUtf8Lossless } from "./text.js";
