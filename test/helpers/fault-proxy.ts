/**
 * An in-process HTTP proxy in front of a real registry that injects the faults a
 * real server will not produce on demand: error statuses, 429 with Retry-After,
 * a connection reset before or in the middle of a response, a truncated body,
 * corrupted bytes, a body that trickles, no answer at all. It logs every request
 * it sees, with the request body bytes it received.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type Fault =
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  /** Drop the connection without answering (the request body is not forwarded). */
  | { kind: "reset" }
  /** Forward, send the headers and `afterBytes` bytes of the body, then reset the connection. */
  | { kind: "reset-mid-body"; afterBytes: number }
  /** Forward, send the headers (full Content-Length) and `afterBytes` bytes, then close cleanly. */
  | { kind: "truncate"; afterBytes: number }
  /** Forward `afterBytes` bytes of the request body, then reset both connections. */
  | { kind: "reset-mid-request"; afterBytes: number }
  /** Answer 307 with Location `to` + the request path (e.g. the registry's own address: another host). */
  | { kind: "redirect"; to: string }
  /** Forward, adding these headers to the response. */
  | { kind: "add-headers"; headers: Record<string, string> }
  /** Forward, flipping one bit of the body at `at`. */
  | { kind: "corrupt"; at: number }
  /** Forward, sending the headers and then the body one byte every `everyMs` (a registry that trickles). */
  | { kind: "drip"; everyMs: number }
  /** Read the request and never answer (the connection stays open until the client leaves). */
  | { kind: "hang" }
  /** Forward, and hold the registry's answer back until `until` settles. */
  | { kind: "hold"; until: Promise<unknown> };

export interface FaultRule {
  method?: string;
  path: RegExp;
  /** How many matching requests get the fault (default 1; Infinity for all). */
  times?: number;
  /** Let this many matching requests through untouched first (default 0). */
  skip?: number;
  fault: Fault;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  contentRange?: string;
  /** The fault applied, if any. */
  fault?: Fault["kind"];
  /** Request body bytes received from the client so far, and the Content-Length it declared. */
  bodyBytes: number;
  contentLength?: number;
}

export interface FaultProxy {
  host: string;
  port: number;
  log: LoggedRequest[];
  /** Most requests matching `trackInFlight` seen at the same time. */
  maxInFlight(): number;
  trackInFlight(re: RegExp): void;
  add(rule: FaultRule): void;
  clear(): void;
  stop(): Promise<void>;
}

/** Send `from`'s body to `to` one byte every `everyMs`, until it ends or `to` closes. */
function drip(from: IncomingMessage, to: ServerResponse, everyMs: number): void {
  const pending: number[] = [];
  let ended = false;
  from.on("data", (c: Buffer) => pending.push(...c));
  from.on("end", () => (ended = true));
  const t = setInterval(() => {
    const b = pending.shift();
    if (b !== undefined) to.write(Buffer.from([b]));
    else if (ended) {
      clearInterval(t);
      to.end();
    }
  }, everyMs);
  to.on("close", () => {
    clearInterval(t);
    from.destroy();
  });
}

export async function startFaultProxy(target: { port: number }): Promise<FaultProxy> {
  const rules: (FaultRule & { left: number; toSkip: number })[] = [];
  const log: LoggedRequest[] = [];
  let tracked: RegExp | undefined;
  let inFlight = 0;
  let maxInFlight = 0;

  const forward = (req: IncomingMessage, res: ServerResponse, fault: Fault | undefined) => {
    const up = httpRequest(
      { host: "127.0.0.1", port: target.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        if (!fault || fault.kind === "add-headers") {
          res.writeHead(ur.statusCode ?? 502, { ...ur.headers, ...(fault?.headers ?? {}) });
          ur.pipe(res);
          return;
        }
        if (fault.kind === "hold") {
          ur.pause();
          void fault.until.finally(() => {
            res.writeHead(ur.statusCode ?? 502, ur.headers);
            ur.pipe(res);
          });
          return;
        }
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        if (fault.kind === "drip") {
          drip(ur, res, fault.everyMs);
          return;
        }
        let sent = 0;
        ur.on("data", (chunk: Buffer) => {
          if (fault.kind === "corrupt") {
            const c = Buffer.from(chunk);
            if (fault.at >= sent && fault.at < sent + c.length) c[fault.at - sent] ^= 0x01;
            sent += c.length;
            res.write(c);
            return;
          }
          if (fault.kind !== "reset-mid-body" && fault.kind !== "truncate") return;
          const room = fault.afterBytes - sent;
          if (room <= 0) return;
          const part = chunk.subarray(0, room);
          sent += part.length;
          res.write(part);
          if (sent >= fault.afterBytes) {
            ur.destroy();
            // Let the bytes reach the client, then break the connection.
            setImmediate(() => {
              if (fault.kind === "truncate") res.socket?.end();
              else res.socket?.resetAndDestroy();
            });
          }
        });
        ur.on("end", () => {
          if (fault.kind === "corrupt") res.end();
        });
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  };

  const server: Server = createServer((req, res) => {
    const entry: LoggedRequest = { method: req.method ?? "", path: req.url ?? "", bodyBytes: 0 };
    if (req.headers["content-length"] !== undefined) entry.contentLength = Number(req.headers["content-length"]);
    req.on("data", (c: Buffer) => (entry.bodyBytes += c.length));
    if (typeof req.headers.range === "string") entry.range = req.headers.range;
    if (typeof req.headers["content-range"] === "string") entry.contentRange = req.headers["content-range"];
    log.push(entry);
    if (tracked?.test(req.url ?? "")) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on("close", () => inFlight--);
    }
    const rule = rules.find((r) => r.left > 0 && (!r.method || r.method === req.method) && r.path.test(req.url ?? ""));
    if (!rule) return forward(req, res, undefined);
    if (rule.toSkip > 0) {
      rule.toSkip--;
      return forward(req, res, undefined);
    }
    rule.left--;
    const fault = rule.fault;
    entry.fault = fault.kind;
    switch (fault.kind) {
      case "status":
        req.resume();
        res.writeHead(fault.status, { "content-type": "application/json", ...fault.headers });
        res.end(fault.body ?? JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: `injected ${fault.status}` }] }));
        return;
      case "reset":
        req.socket.resetAndDestroy();
        return;
      case "hang":
        req.resume();
        return;
      case "redirect":
        req.resume();
        res.writeHead(307, { location: `${fault.to}${req.url ?? ""}` });
        res.end();
        return;
      case "reset-mid-request": {
        const up = httpRequest({ host: "127.0.0.1", port: target.port, method: req.method, path: req.url, headers: req.headers });
        up.on("error", () => {});
        let n = 0;
        req.on("data", (chunk: Buffer) => {
          if (n >= fault.afterBytes) return;
          const part = chunk.subarray(0, fault.afterBytes - n);
          n += part.length;
          up.write(part);
          if (n >= fault.afterBytes) {
            // Give the registry the bytes, then cut both sides.
            setTimeout(() => {
              up.destroy();
              req.socket.resetAndDestroy();
            }, 50);
          }
        });
        return;
      }
      default:
        forward(req, res, fault);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    port,
    log,
    maxInFlight: () => maxInFlight,
    trackInFlight: (re) => {
      tracked = re;
      inFlight = 0;
      maxInFlight = 0;
    },
    add: (rule) => rules.push({ ...rule, left: rule.times ?? 1, toSkip: rule.skip ?? 0 }),
    clear: () => {
      rules.length = 0;
      log.length = 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
