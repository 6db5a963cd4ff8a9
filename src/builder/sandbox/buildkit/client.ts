/**
 * A client for BuildKit's gRPC Control API (buildkitd) over unix:// or tcp://
 * (optionally TLS with client certificates), on @grpc/grpc-js with our own
 * message codecs. Every call is counted (`calls`), so tests can prove that a
 * fully cached build never contacted the daemon, and every call takes an
 * AbortSignal that cancels it on the daemon too (a cancelled Solve stops the job).
 */
import { readFile } from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import { OcibuildError, optionWords } from "../../../errors.js";
import { commonTrust } from "../../../oci/registry/tls.js";
import {
  CONTROL_SERVICE,
  decodeInfoResponse,
  decodeListWorkersResponse,
  decodeSolveResponse,
  decodeBytesMessage,
  decodeStatusResponse,
  encodeBytesMessage,
  encodeEmpty,
  encodeSolveRequest,
  encodeStatusRequest,
  type BuildkitVersion,
  type SolveRequest,
  type SolveResponse,
  type StatusResponse,
  type WorkerRecord,
} from "./messages.js";

export interface BuildkitConnectOptions {
  /** unix:///run/buildkit/buildkitd.sock, tcp://host:port (BUILDKIT_HOST's forms). */
  address: string;
  /** PEM files for TLS over tcp://: the daemon's CA, and a client certificate with its key. */
  ca?: string;
  cert?: string;
  key?: string;
  /** TLS server name when it differs from the address's host. */
  serverName?: string;
}

export { DEFAULT_BUILDKIT_ADDRESS } from "./address.js";

/** grpc-js's target for a BUILDKIT_HOST-style address. */
export function grpcTarget(address: string): string {
  const m = /^([a-z0-9+-]+):\/\/(.*)$/i.exec(address);
  if (!m) {
    throw new OcibuildError("BUILDKIT_BAD_ADDRESS", `BuildKit address "${address}" has no scheme`, {
      hint: "use unix:///path/to/buildkitd.sock or tcp://host:port",
    });
  }
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (scheme === "unix") {
    if (!rest.startsWith("/")) throw new OcibuildError("BUILDKIT_BAD_ADDRESS", `unix socket path in "${address}" must be absolute`);
    return `unix://${rest}`;
  }
  if (scheme === "tcp") {
    if (!/^[^/]+:\d+$/.test(rest)) throw new OcibuildError("BUILDKIT_BAD_ADDRESS", `"${address}" must be tcp://host:port`);
    return rest;
  }
  throw new OcibuildError("BUILDKIT_BAD_ADDRESS", `unsupported BuildKit address scheme "${scheme}://" in "${address}"`, {
    hint: "ocibuild connects over unix:// or tcp:// (docker-container:// and kube-pod:// are buildx drivers: expose buildkitd on tcp:// instead)",
  });
}

async function credentialsFor(opts: BuildkitConnectOptions): Promise<grpc.ChannelCredentials> {
  const tls = opts.ca !== undefined || opts.cert !== undefined || opts.key !== undefined;
  if (!tls) return grpc.credentials.createInsecure();
  if (opts.address.startsWith("unix:")) {
    throw new OcibuildError("BUILDKIT_BAD_ADDRESS", "TLS certificates are only used with tcp:// BuildKit addresses");
  }
  if ((opts.cert === undefined) !== (opts.key === undefined)) {
    throw new OcibuildError("BUILDKIT_TLS_CONFIG", `${optionWords("cert")} and ${optionWords("key")} must be given together`);
  }
  const read = async (p: string | undefined, what: string) => {
    if (p === undefined) return null;
    try {
      return await readFile(p);
    } catch (e) {
      throw new OcibuildError("BUILDKIT_TLS_CONFIG", `cannot read the BuildKit ${what} ${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
  };
  // Without a CA of its own, the daemon is trusted as a registry is by default (Node's CAs,
  // the system bundle, NODE_EXTRA_CA_CERTS, which bin/ocibuild keeps from Node's own start-up).
  const ca = (await read(opts.ca, "CA certificate")) ?? Buffer.from((await commonTrust(process.env)).ca.join("\n"));
  return grpc.credentials.createSsl(ca, await read(opts.key, "client key"), await read(opts.cert, "client certificate"));
}

/** A gRPC failure as our error: unreachable, too old, cancelled, or the daemon's own message. */
export function mapGrpcError(e: unknown, address: string, what: string): OcibuildError {
  if (e instanceof OcibuildError) return e;
  const err = e as grpc.ServiceError;
  const details = { grpcCode: err.code, address };
  const text = err.details || err.message;
  // A transport-level TLS failure (never a command's own failure, whose text may say anything).
  const tlsFailure = /SSL routines|bad certificate|certificate verify failed|self[- ]signed certificate|handshake failure/i.test(text);
  if (tlsFailure && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.UNKNOWN || err.code === grpc.status.INTERNAL) && !/did not complete successfully/.test(text)) {
    return new OcibuildError("BUILDKIT_TLS", `TLS with the BuildKit daemon at ${address} failed: ${text.trim()}`, {
      details,
      cause: e,
      hint: `check ${optionWords("ca")} (the daemon's CA), and ${optionWords("cert")} with ${optionWords("key")} (a client certificate the daemon's CA signed)`,
    });
  }
  switch (err.code) {
    case grpc.status.UNAVAILABLE:
      return new OcibuildError("BUILDKIT_UNREACHABLE", `cannot reach the BuildKit daemon at ${address}: ${err.details || err.message}`, {
        retryable: true,
        details,
        cause: e,
        hint: `start buildkitd there, or point ${optionWords("address")} at a running daemon`,
      });
    case grpc.status.UNIMPLEMENTED:
      return new OcibuildError("BUILDKIT_VERSION_TOO_OLD", `the BuildKit daemon at ${address} does not implement ${what}: ${err.details || err.message}`, {
        details,
        cause: e,
        hint: "ocibuild needs BuildKit v0.11 or newer",
      });
    case grpc.status.CANCELLED:
      return new OcibuildError("BUILDKIT_ABORTED", `${what} on the BuildKit daemon was cancelled`, { details, cause: e });
    case grpc.status.DEADLINE_EXCEEDED:
      return new OcibuildError("BUILDKIT_TIMEOUT", `${what} on the BuildKit daemon timed out`, { details, cause: e, retryable: true });
    default:
      return new OcibuildError("BUILDKIT_ERROR", `BuildKit ${what} failed: ${text}`, { details, cause: e });
  }
}

function abortedError(what: string, signal: AbortSignal): OcibuildError {
  return new OcibuildError("BUILDKIT_ABORTED", `${what} was cancelled`, { cause: signal.reason });
}

export class BuildkitClient {
  /** Number of RPCs started (unary and streaming). */
  calls = 0;
  private constructor(
    private readonly client: grpc.Client,
    readonly address: string,
  ) {}

  static async connect(opts: BuildkitConnectOptions): Promise<BuildkitClient> {
    const target = grpcTarget(opts.address);
    const creds = await credentialsFor(opts);
    const options: grpc.ClientOptions = {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    };
    if (opts.serverName) options["grpc.ssl_target_name_override"] = opts.serverName;
    // Over a unix socket, HTTP/2's :authority is arbitrary; buildkitd expects a plain host.
    if (target.startsWith("unix:")) options["grpc.default_authority"] = "localhost";
    return new BuildkitClient(new grpc.Client(target, creds, options), opts.address);
  }

  private unary<Req, Res>(method: string, req: Req, enc: (r: Req) => Buffer, dec: (b: Buffer) => Res, signal?: AbortSignal, what = method): Promise<Res> {
    if (signal?.aborted) return Promise.reject(abortedError(what, signal));
    this.calls++;
    return new Promise<Res>((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      const call = this.client.makeUnaryRequest(`${CONTROL_SERVICE}/${method}`, enc, dec, req, new grpc.Metadata(), {}, (err, res) => {
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted) reject(abortedError(what, signal));
        else if (err) reject(mapGrpcError(err, this.address, what));
        else resolve(res as Res);
      });
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }

  /** Daemon version (Info, BuildKit v0.11+). */
  info(signal?: AbortSignal): Promise<BuildkitVersion | undefined> {
    return this.unary("Info", undefined, encodeEmpty, decodeInfoResponse, signal, "Info");
  }

  listWorkers(signal?: AbortSignal): Promise<WorkerRecord[]> {
    return this.unary("ListWorkers", undefined, encodeEmpty, decodeListWorkersResponse, signal, "ListWorkers");
  }

  solve(req: SolveRequest, signal?: AbortSignal): Promise<SolveResponse> {
    return this.unary("Solve", req, encodeSolveRequest, decodeSolveResponse, signal, "Solve");
  }

  /**
   * Follow a solve's progress. Resolves when the daemon ends the stream (the job
   * finished); rejects on a transport error. Cancelled with `signal`.
   */
  status(ref: string, onStatus: (s: StatusResponse) => void, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortedError("Status", signal));
    this.calls++;
    return new Promise<void>((resolve, reject) => {
      const call = this.client.makeServerStreamRequest(`${CONTROL_SERVICE}/Status`, encodeStatusRequest, decodeStatusResponse, ref, new grpc.Metadata(), {});
      const onAbort = () => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = (err?: unknown) => {
        signal?.removeEventListener("abort", onAbort);
        if (err === undefined) resolve();
        else if (signal?.aborted) reject(abortedError("Status", signal));
        else reject(mapGrpcError(err, this.address, "Status"));
      };
      call.on("data", (s: StatusResponse) => onStatus(s));
      call.on("error", (e: grpc.ServiceError) => done(e.code === grpc.status.CANCELLED && !signal?.aborted ? undefined : e));
      call.on("end", () => done());
    });
  }

  /**
   * The raw Session stream (chunks of the daemon's h2c connection back to us, each
   * a BytesMessage); see session.ts. `md` carries the session's id and methods.
   */
  sessionStream(md: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer> {
    this.calls++;
    return this.client.makeBidiStreamRequest(`${CONTROL_SERVICE}/Session`, encodeBytesMessage, decodeBytesMessage, md, {});
  }

  close(): void {
    this.client.close();
  }
}
