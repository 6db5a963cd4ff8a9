/** Finding a host program, as a shell would. */
import { existsSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";

/** Debian's system directories: where util-linux and uidmap live even when PATH leaves them out. */
const SYSTEM_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * The path of program `name` (an absolute path is taken as it is, if it exists):
 * the first match on `path` (default: this process's PATH), then in the system
 * directories.
 */
export function which(name: string, path: string | undefined = process.env.PATH): string | undefined {
  if (isAbsolute(name)) return existsSync(name) ? name : undefined;
  for (const dir of [...(path ?? "").split(delimiter), ...SYSTEM_DIRS]) {
    if (dir !== "" && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}
