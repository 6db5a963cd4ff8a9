/**
 * RUN's network, for real: by default a namespace of the step's own whose only way
 * out is slirp4netns, so services bound to the host's 127.0.0.1 are out of reach
 * (directly and through slirp's host alias 10.0.2.2) while addresses outside the
 * namespace, and the host's resolver, are reachable; `host` shares the host's.
 */
import { mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import type { RunSpec } from "../../src/builder/sandbox/index.js";
import { SLIRP_DNS, sandboxResolvConf } from "../../src/builder/sandbox/network.js";
import { haveBusyboxStatic, haveTool, isRoot, makeBusyboxRoot } from "../../testdata/builder/fixtures.js";

describe("sandboxResolvConf", () => {
  it("replaces loopback nameservers (unreachable from the step's namespace) by slirp4netns' forwarder, once, and keeps the rest", () => {
    const host = "# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.internal\nnameserver ::1\nnameserver 192.0.2.53\n";
    expect(sandboxResolvConf(host)).toBe(`# generated\nnameserver ${SLIRP_DNS}\noptions edns0 trust-ad\nsearch example.internal\nnameserver 192.0.2.53\n`);
    expect(sandboxResolvConf("nameserver 10.255.255.53\n")).toBe("nameserver 10.255.255.53\n");
  });
});

/** A TCP server that greets each connection with `token` (the proof a RUN reached it). */
async function greeter(host: string, token: string): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.end(`${token}\n`));
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return { server, port: (server.address() as { port: number }).port };
}

/** The machine's own non-loopback IPv4 address, if it has one. */
function ownAddress(): string | undefined {
  return Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === "IPv4" && !a.internal)?.address;
}

/** Whether this machine reaches host:port itself (the Debian mirror may be out of reach in some CI). */
function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 5000 }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
    s.on("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

const MIRROR = "deb.debian.org";
const ready = isRoot && haveTool("bwrap") && haveTool("slirp4netns") && haveBusyboxStatic();
const mirrorUp = ready ? await reachable(MIRROR, 80) : false;
const executor = new BwrapExecutor();

describe.skipIf(!ready)("RUN's network (needs root, bwrap, slirp4netns, busybox-static)", () => {
  let base: string;
  let root: string;
  const servers: Server[] = [];

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-sandbox-net-"));
    root = join(base, "root");
    await makeBusyboxRoot(root);
    for (const a of ["nc", "nslookup", "grep", "head"]) await symlink("busybox", join(root, "bin", a));
  });
  afterAll(async () => {
    for (const s of servers) s.close();
    if (base) await rm(base, { recursive: true, force: true });
  });

  async function run(script: string, extra: Partial<RunSpec> = {}) {
    let out = "";
    const res = await executor.runInRoot({ root, args: ["/bin/sh", "-c", script], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network: "default", onOutput: (_s, c) => (out += c.toString()), ...extra });
    return { ...res, out };
  }

  it("cannot reach a server bound on the host's 127.0.0.1, nor through slirp's host alias; network=host can", async () => {
    const { server, port } = await greeter("127.0.0.1", "loopback-greeting");
    servers.push(server);
    const probe = `nc -w 3 127.0.0.1 ${port} </dev/null; echo "direct=$?"; nc -w 3 10.0.2.2 ${port} </dev/null; echo "alias=$?"`;
    const isolated = await run(probe);
    expect(isolated.out).not.toContain("loopback-greeting");
    expect(isolated.out).toMatch(/direct=[1-9]/);
    expect(isolated.out).toMatch(/alias=[1-9]/);
    const shared = await run(`nc -w 3 127.0.0.1 ${port} </dev/null`, { network: "host" });
    expect(shared.out).toContain("loopback-greeting");
  });

  it("a RUN as a non-root user can read /etc/resolv.conf (apt's downloads run as _apt)", async () => {
    const r = await run(`cat /etc/resolv.conf >/dev/null && echo readable; ls -l /etc/resolv.conf`, { uid: 42, gid: 65534 });
    expect(r.exitCode).toBe(0);
    expect(r.out).toContain("readable");
    expect(r.out).toContain("-rw-r--r--");
  });

  const own = ownAddress();
  it.skipIf(own === undefined)("reaches a server on this machine's own non-loopback address (outbound through slirp4netns)", async () => {
    const { server, port } = await greeter(own!, "outbound-greeting");
    servers.push(server);
    const r = await run(`ip -o -4 addr show tap0; nc -w 5 ${own} ${port} </dev/null`);
    expect(r.out).toContain("10.0.2.100/24");
    expect(r.out).toContain("outbound-greeting");
  });

  it.skipIf(!mirrorUp)(`resolves and connects to the Debian mirror (${MIRROR}:80) through the host's resolver (skipped when this machine cannot reach it)`, async () => {
    const r = await run(`head -n 50 /etc/resolv.conf; nslookup ${MIRROR} >/dev/null && echo resolved; nc -w 10 ${MIRROR} 80 </dev/null && echo connected`);
    expect(r.out).toContain("resolved");
    expect(r.out).toContain("connected");
    expect(r.out).not.toMatch(/^nameserver (127\.|::1)/m);
  });

  it("leaves no slirp4netns behind (it exits within a second of the step)", async () => {
    await run("true");
    const slirps = async () => {
      let n = 0;
      for (const pid of await readdir("/proc")) {
        const m = /^\d+ \((.*)\) \S (\d+)/.exec(await readFile(`/proc/${pid}/stat`, "utf8").catch(() => ""));
        if (m && m[1] === "slirp4netns" && Number(m[2]) === process.pid) n++;
      }
      return n;
    };
    for (let i = 0; i < 20 && (await slirps()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await slirps()).toBe(0);
  });
});
