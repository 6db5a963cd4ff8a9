/**
 * COPY/ADD --chmod values: octal ("755", "0644") or symbolic ("u+x,go-w", "a=rX"),
 * applied to each copied file and directory.
 */
import { OcibuildError } from "../../errors.js";

export type ModeFn = (mode: number, isDir: boolean) => number;

const WHO: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

/** An octal --chmod's permission bits (what BuildKit gives the directories a copy makes), or undefined for a symbolic one. */
export function octalChmod(spec: string): number | undefined {
  return /^[0-7]{1,4}$/.test(spec) ? parseInt(spec, 8) & 0o777 : undefined;
}

export function parseChmod(spec: string): ModeFn {
  if (/^[0-7]{1,4}$/.test(spec)) {
    const m = parseInt(spec, 8);
    return () => m;
  }
  const clauses = spec.split(",");
  const ops: ((mode: number, isDir: boolean) => number)[] = [];
  for (const clause of clauses) {
    const m = /^([ugoa]*)([-+=])([rwxXst]*)$/.exec(clause);
    if (!m) {
      throw new OcibuildError("BUILD_CHMOD_INVALID", `invalid --chmod value "${spec}": expected octal (e.g. 755) or symbolic (e.g. u+x,go-w)`);
    }
    const who = m[1] === "" ? 0o7777 : [...m[1]!].reduce((acc, c) => acc | WHO[c]!, 0);
    const op = m[2]!;
    const perms = m[3]!;
    ops.push((mode, isDir) => {
      let bits = 0;
      for (const p of perms) {
        if (p === "r") bits |= 0o444;
        else if (p === "w") bits |= 0o222;
        else if (p === "x") bits |= 0o111;
        else if (p === "X") bits |= isDir || (mode & 0o111) !== 0 ? 0o111 : 0;
        else if (p === "s") bits |= 0o6000;
        else if (p === "t") bits |= 0o1000;
      }
      bits &= who;
      if (op === "+") return mode | bits;
      if (op === "-") return mode & ~bits;
      return (mode & ~(who & 0o7777)) | bits;
    });
  }
  return (mode, isDir) => ops.reduce((acc, f) => f(acc, isDir), mode & 0o7777);
}
