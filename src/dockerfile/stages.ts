import { OcibuildError } from "../errors.js";
import type { FromInstr, Instruction } from "./instructions.js";
import type { ParseResult, ParseWarning } from "./parse.js";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface StagePlanOptions {
  buildArgs?: Record<string, string>;
  target?: string;
  buildPlatform: Platform;
  targetPlatform: Platform;
}

export interface Stage {
  index: number;
  name?: string;
  base: string;
  baseStage?: number;
  platform?: string;
  instructions: Instruction[];
  from: FromInstr;
  dependsOn: number[];
  globalArgs: Record<string, string>;
}

export interface StagePlan {
  stages: Stage[];
  target: number;
  order: number[];
  warnings: ParseWarning[];
  unusedBuildArgs: string[];
}

export const PROXY_ARGS: string[] = [
  "HTTP_PROXY",
  "http_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "FTP_PROXY",
  "ftp_proxy",
  "NO_PROXY",
  "no_proxy",
  "ALL_PROXY",
  "all_proxy",
];

export function platformArgs(build: Platform, target: Platform): Record<string, string> {
  void build;
  void target;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", "not written yet");
}

export function planStages(parsed: ParseResult, opts: StagePlanOptions): StagePlan {
  void parsed;
  void opts;
  throw new OcibuildError("DOCKERFILE_UNIMPLEMENTED", "not written yet");
}
