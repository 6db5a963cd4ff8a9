/**
 * A BuildKit session: the client side of `Control/Session`, a bidirectional
 * stream of byte chunks over which the daemon dials back and speaks gRPC (h2c)
 * to us. We serve, on node:http2 over that stream:
 * - grpc.health.v1.Health/Check (the daemon checks the session is alive);
 * - moby.buildkit.secrets.v1.Secrets/GetSecret: RUN --mount=type=secret values,
 *   which so never appear in the LLB definition, a registry or the daemon's cache;
 * - moby.filesync.v1.Auth/Credentials: registry credentials for a host, from the
 *   same docker config ocibuild uses, so the daemon can pull the staged input and
 *   push its result to a registry that needs a login. GetTokenAuthority answers
 *   "unimplemented", which makes the daemon fetch tokens itself with those
 *   credentials (BuildKit's documented fallback).
 * The messages are encoded by hand from the protocols' field numbers.
 */
import { randomBytes } from "node:crypto";
import * as http2 from "node:http2";
import { Duplex } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { OcibuildError } from "../../../errors.js";
import type { BuildkitClient } from "./client.js";
import { ProtoWriter, readFields } from "./proto.js";

export interface SessionCredentials {
  /** Credentials for a registry host ("registry.example.com", "127.0.0.1:5000"); undefined: anonymous. */
  (host: string, signal?: AbortSignal): Promise<{ username: string; secret: string } | undefined>;
}

export interface BuildkitSession {
  readonly id: string;
  /** Calls the daemon made to us, by method (for tests and diagnostics). */
  readonly served: Map<string, number>;
  close(): void;
}

const HEALTH_CHECK = "/grpc.health.v1.Health/Check";
const AUTH = "/moby.filesync.v1.Auth";
const GET_SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const METHODS = [HEALTH_CHECK, `${AUTH}/Credentials`, `${AUTH}/FetchToken`, `${AUTH}/GetTokenAuthority`, `${AUTH}/VerifyTokenAuthority`, GET_SECRET];

/** gRPC status codes we answer with. */
const Status = { OK: 0, NOT_FOUND: 5, INTERNAL: 13, UNIMPLEMENTED: 12 } as const;

function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(0, 0);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** The first length-prefixed message of a unary gRPC request body. */
function firstMessage(body: Buffer): Buffer {
  if (body.length < 5) return Buffer.alloc(0);
  if (body[0] !== 0) throw new Error("compressed gRPC messages are not supported");
  const len = body.readUInt32BE(1);
  return body.subarray(5, 5 + len);
}

function stringField(msg: Buffer, field: number): string {
  for (const f of readFields(msg)) if (f.field === field) return f.data.toString("utf8");
  return "";
}

type Handler = (req: Buffer, signal: AbortSignal) => Promise<Buffer | { status: number; message: string }>;

function handlers(credentials: SessionCredentials, secrets: ReadonlyMap<string, Buffer>): Map<string, Handler> {
  const unimplemented: Handler = async () => ({ status: Status.UNIMPLEMENTED, message: "not provided by ocibuild" });
  return new Map<string, Handler>([
    // HealthCheckResponse { status = SERVING (1) }
    [HEALTH_CHECK, async () => new ProtoWriter().int(1, 1).finish()],
    [
      `${AUTH}/Credentials`,
      async (req, signal) => {
        const host = stringField(req, 1);
        const c = await credentials(host, signal);
        return new ProtoWriter().string(1, c?.username).string(2, c?.secret).finish();
      },
    ],
    [
      // GetSecretRequest { ID = 1 } -> GetSecretResponse { data = 1 }; NotFound lets the daemon apply `required`.
      GET_SECRET,
      async (req) => {
        const id = stringField(req, 1);
        const value = secrets.get(id);
        return value === undefined ? { status: Status.NOT_FOUND, message: `secret ${id} not found` } : new ProtoWriter().bytes(1, value).finish();
      },
    ],
    [`${AUTH}/GetTokenAuthority`, unimplemented],
    [`${AUTH}/FetchToken`, unimplemented],
    [`${AUTH}/VerifyTokenAuthority`, unimplemented],
  ]);
}

/**
 * Open a session on the daemon. Pass its `id` as SolveRequest.session; close it
 * when the solve is over (or aborted).
 */
export function openSession(
  client: BuildkitClient,
  opts: { credentials: SessionCredentials; secrets?: ReadonlyMap<string, Buffer>; signal?: AbortSignal },
): BuildkitSession {
  const id = randomBytes(16).toString("hex");
  const md = new grpc.Metadata();
  md.set("x-docker-expose-session-uuid", id);
  md.set("x-docker-expose-session-name", "ocibuild");
  md.set("x-docker-expose-session-sharedkey", "");
  for (const m of METHODS) md.add("x-docker-expose-session-grpc-method", m);
  const call = client.sessionStream(md);
  const ac = new AbortController();
  const served = new Map<string, number>();

  // The stream of BytesMessage chunks as a byte duplex for the HTTP/2 server.
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (!call.write(chunk)) call.once("drain", () => cb());
      else cb();
    },
    final(cb) {
      call.end();
      cb();
    },
  });
  call.on("data", (chunk: Buffer) => socket.push(chunk));
  call.on("end", () => socket.push(null));
  call.on("error", () => socket.destroy());
  socket.on("error", () => {});

  const table = handlers(opts.credentials, opts.secrets ?? new Map());
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const path = String(headers[":path"] ?? "");
    served.set(path, (served.get(path) ?? 0) + 1);
    const parts: Buffer[] = [];
    stream.on("data", (c: Buffer) => parts.push(c));
    stream.on("error", () => {});
    stream.on("end", () => {
      const handler = table.get(path);
      const fail = (status: number, message: string) => {
        if (stream.destroyed) return;
        stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(status), "grpc-message": encodeURIComponent(message) }, { endStream: true });
      };
      if (!handler) return fail(Status.UNIMPLEMENTED, `unknown method ${path}`);
      let req: Buffer;
      try {
        req = firstMessage(Buffer.concat(parts));
      } catch (e) {
        return fail(Status.INTERNAL, (e as Error).message);
      }
      handler(req, ac.signal).then(
        (res) => {
          if (stream.destroyed) return;
          if (!Buffer.isBuffer(res)) return fail(res.status, res.message);
          stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(Status.OK) }));
          stream.end(grpcFrame(res));
        },
        (e: unknown) => fail(Status.INTERNAL, e instanceof OcibuildError ? e.message : String((e as Error).message ?? e)),
      );
    });
  });
  server.on("sessionError", () => {});
  server.emit("connection", socket);

  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    opts.signal?.removeEventListener("abort", close);
    ac.abort();
    call.cancel();
    socket.destroy();
    server.close();
  };
  opts.signal?.addEventListener("abort", close, { once: true });
  return { id, served, close };
}
