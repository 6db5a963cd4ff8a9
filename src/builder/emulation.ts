/**
 * Running RUN steps of a foreign platform: the host runs its own architecture;
 * others need a qemu-user handler registered with binfmt_misc (with the F flag,
 * so that it works inside the sandbox's root). `setupBinfmt` registers Debian's
 * qemu-user-static handlers (/usr/lib/binfmt.d/qemu-*.conf) when run as root.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { OcibuildError } from "../errors.js";
import { runProcess } from "../process.js";
import type { Platform } from "../oci/manifest.js";

const BINFMT = "/proc/sys/fs/binfmt_misc";
const DEBIAN_BINFMT_D = "/usr/lib/binfmt.d";

/** qemu's name for an OCI architecture. */
export function qemuArch(p: Platform): string | undefined {
  const map: Record<string, string> = {
    amd64: "x86_64",
    "386": "i386",
    arm64: "aarch64",
    arm: "arm",
    riscv64: "riscv64",
    ppc64le: "ppc64le",
    s390x: "s390x",
    mips64le: "mips64el",
    loong64: "loongarch64",
  };
  return map[p.architecture];
}

/** Whether the host runs this platform's binaries without emulation. */
export function runsNatively(p: Platform, host: Platform): boolean {
  if (p.os !== host.os) return false;
  if (p.architecture === host.architecture) return true;
  return host.architecture === "amd64" && p.architecture === "386";
}

export interface EmulationStatus {
  ok: boolean;
  /** The binfmt_misc entry that runs it ("qemu-aarch64"). */
  handler?: string;
  reason?: string;
}

/** Is a qemu handler for `p` registered and enabled? */
export async function emulationStatus(p: Platform): Promise<EmulationStatus> {
  const arch = qemuArch(p);
  if (!arch) return { ok: false, reason: `no qemu emulator is known for ${p.os}/${p.architecture}` };
  const handler = `qemu-${arch}`;
  let text: string;
  try {
    text = await readFile(`${BINFMT}/${handler}`, "utf8");
  } catch {
    return { ok: false, handler, reason: `no binfmt_misc handler ${handler} is registered` };
  }
  if (!text.startsWith("enabled")) return { ok: false, handler, reason: `the binfmt_misc handler ${handler} is disabled` };
  if (!/flags:.*F/.test(text)) return { ok: false, handler, reason: `the binfmt_misc handler ${handler} lacks the F flag, so it cannot run inside a sandbox's root` };
  return { ok: true, handler };
}

export function emulationError(p: Platform, status: EmulationStatus): OcibuildError {
  return new OcibuildError("SANDBOX_EMULATION_UNAVAILABLE", `cannot run ${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""} RUN steps on this host: ${status.reason}`, {
    hint: "as root, run `ocibuild setup binfmt` (it registers Debian's qemu-user-static handlers; install them with apt-get install qemu-user-static)",
  });
}

async function mountBinfmt(): Promise<void> {
  try {
    await readFile(`${BINFMT}/status`, "utf8");
    return;
  } catch {
    // not mounted
  }
  const r = await runProcess("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT]);
  if (r.code !== 0) throw new OcibuildError("SETUP_BINFMT_FAILED", `cannot mount binfmt_misc: ${r.stderr.trim()}`);
}

/**
 * Register Debian's qemu-user-static handlers (all, or those for `arches`, qemu
 * names) that are not registered yet. Returns the handlers it registered.
 */
export async function setupBinfmt(arches?: string[]): Promise<string[]> {
  if (process.getuid?.() !== 0) throw new OcibuildError("SETUP_BINFMT_NOT_ROOT", "registering binfmt_misc handlers needs root");
  let files: string[];
  try {
    files = (await readdir(DEBIAN_BINFMT_D)).filter((f) => /^qemu-.*\.conf$/.test(f));
  } catch {
    files = [];
  }
  if (files.length === 0) {
    throw new OcibuildError("SETUP_BINFMT_NO_QEMU", `no qemu handlers in ${DEBIAN_BINFMT_D}`, { hint: "apt-get install qemu-user-static" });
  }
  await mountBinfmt();
  const done: string[] = [];
  for (const f of files.sort()) {
    const name = f.slice(0, -".conf".length);
    if (arches && !arches.includes(name.slice("qemu-".length))) continue;
    const exists = await readFile(`${BINFMT}/${name}`, "utf8").then(
      () => true,
      () => false,
    );
    if (exists) continue;
    const line = (await readFile(`${DEBIAN_BINFMT_D}/${f}`, "utf8")).split("\n").find((l) => l.startsWith(":"));
    if (!line) continue;
    // Debian's lines end in the flags ("OCF"/"OPF"); F is what makes the handler work in a chroot.
    const fields = line.split(":");
    const flags = fields[fields.length - 1] ?? "";
    if (!flags.includes("F")) fields[fields.length - 1] = `${flags}F`;
    try {
      await writeFile(`${BINFMT}/register`, fields.join(":"));
      done.push(name);
    } catch (e) {
      throw new OcibuildError("SETUP_BINFMT_FAILED", `cannot register ${name}: ${(e as Error).message}`, { cause: e });
    }
  }
  return done;
}
