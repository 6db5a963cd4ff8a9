/** Locates the shared conformance data (BuildKit's test vectors); undefined when absent. */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export function conformanceBuildkitDir(): string | undefined {
  const candidates: string[] = [];
  const fromEnv = process.env.OCIBUILD_CONFORMANCE;
  if (fromEnv) candidates.push(join(fromEnv, "buildkit"), fromEnv);
  candidates.push(join(REPO_ROOT, "../shared/conformance/buildkit"));
  return candidates.find((c) => existsSync(join(c, "parser")) && existsSync(join(c, "envVarTest")));
}
