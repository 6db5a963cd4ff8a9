/**
 * RUN's default network, as docker build gives it: a network namespace of the
 * step's own, so it sees none of the host's interfaces (no services bound to the
 * host's 127.0.0.1, no loopback traffic to sniff with CAP_NET_RAW), with outbound
 * access through slirp4netns: a user-mode TCP/IP stack in a host process that
 * turns the namespace's packets into ordinary sockets of its own.
 *
 * slirp4netns runs with --disable-host-loopback (10.0.2.2, its alias for the
 * host's 127.0.0.1, is refused), --enable-sandbox (its own empty mount namespace,
 * every capability dropped but CAP_NET_BIND_SERVICE) and --enable-seccomp. Its
 * DNS forwarder at 10.0.2.3 sends queries to the host's first nameserver, a
 * loopback one (systemd-resolved's 127.0.0.53) included: the step's resolv.conf
 * is the host's, each loopback nameserver replaced by 10.0.2.3.
 */
import { childProcess } from "../../builtins.js";
import type { Writable } from "node:stream";
import { OcibuildError } from "../../errors.js";

/** How long slirp4netns may take to connect a step's namespace (it takes milliseconds). */
const READY_TIMEOUT_MS = 10_000;

/** slirp4netns' built-in DNS forwarder, as the sandbox sees it. */
export const SLIRP_DNS = "10.0.2.3";

const LOOPBACK_NAMESERVER = /^\s*nameserver\s+(127\.\d+\.\d+\.\d+|::1|0\.0\.0\.0|::)\s*(#.*)?$/;

/**
 * The resolv.conf of a step in its own network namespace: the host's, with every
 * loopback nameserver (unreachable from there) replaced by slirp4netns' forwarder,
 * which asks the host's resolver.
 */
export function sandboxResolvConf(host: string): string {
  let forwarder = false;
  const out: string[] = [];
  for (const line of host.split("\n")) {
    if (!LOOPBACK_NAMESERVER.test(line)) {
      out.push(line);
      continue;
    }
    if (!forwarder) out.push(`nameserver ${SLIRP_DNS}`);
    forwarder = true;
  }
  return out.join("\n");
}

export interface UserNetwork {
  /** Resolves once the namespace has its interface, address, route and DNS forwarder. */
  readonly ready: Promise<void>;
  /** Ends slirp4netns (closing its exit fd; SIGKILL if it is still there 2 s later); resolves when it has exited. */
  stop(): Promise<void>;
}

/**
 * Connect the network namespace of process `pid` to the outside through slirp4netns.
 * `pid` must already be in the namespace to connect (never the host's: slirp4netns
 * would then add its interface and default route to the host).
 */
export function startSlirp(slirp4netns: string, pid: number): UserNetwork {
  const args = ["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4", String(pid), "tap0"];
  const child = childProcess().spawn(slirp4netns, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise<void>((resolve) => {
    child.on("close", () => resolve());
    child.on("error", () => resolve());
  });
  const ready = new Promise<void>((resolve, reject) => {
    const failed = (why: string) =>
      reject(new OcibuildError("SANDBOX_NETWORK_FAILED", `slirp4netns could not connect the RUN step's network: ${why}`, {
        hint: "give the step --network=none if it needs no network",
      }));
    // slirp4netns that fails in its child (no /dev/net/tun, say) can stay up without ever
    // becoming ready: a RUN must fail then, not wait for ever.
    const timer = setTimeout(() => {
      failed(`not ready after ${READY_TIMEOUT_MS / 1000} s${lastLine(stderr) ? ` (${lastLine(stderr)})` : ""}`);
      child.kill("SIGKILL");
    }, READY_TIMEOUT_MS).unref();
    child.stdio[3]!.once("data", () => {
      clearTimeout(timer);
      resolve();
    });
    child.on("error", (e) => failed(e.message));
    child.on("close", (code, sig) => {
      clearTimeout(timer);
      failed(lastLine(stderr) || (sig ? `killed by ${sig}` : `exit ${code}`));
    });
  });
  ready.catch(() => {});
  const exitFd = child.stdio[4] as Writable;
  exitFd.on("error", () => {});
  return {
    ready,
    async stop() {
      // slirp4netns waits for a hang-up on its exit fd: our end must be closed, not only shut for writing.
      exitFd.destroy();
      const timer = setTimeout(() => child.kill("SIGKILL"), 2000).unref();
      await exited;
      clearTimeout(timer);
    },
  };
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n").filter((l) => !/^(sent|received) tapfd=/.test(l));
  return lines.at(-1)?.trim() ?? "";
}
