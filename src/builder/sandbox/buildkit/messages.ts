/**
 * The BuildKit Control API messages ocibuild uses, written by hand from the
 * documented field numbers (moby.buildkit.v1: SolveRequest, StatusResponse,
 * ListWorkersResponse, InfoResponse). Only the fields we send or read are here.
 */
import { ProtoWriter, readFields, readMapEntry, readTimestamp, toInt } from "./proto.js";

export const CONTROL_SERVICE = "/moby.buildkit.v1.Control";

export interface SolveRequest {
  ref: string;
  /** An encoded pb.Definition (see llb.ts). */
  definition: Buffer;
  exporter?: string;
  exporterAttrs?: Record<string, string>;
  session?: string;
  frontendAttrs?: Record<string, string>;
  /** Entitlements the solve asks for ("network.host"); the daemon must allow them too. */
  entitlements?: readonly string[];
}

export function encodeSolveRequest(r: SolveRequest): Buffer {
  return new ProtoWriter()
    .string(1, r.ref)
    .bytes(2, r.definition)
    .string(3, r.exporter)
    .stringMap(4, r.exporterAttrs)
    .string(5, r.session)
    .stringMap(7, r.frontendAttrs)
    .strings(9, r.entitlements)
    .finish();
}

export interface SolveResponse {
  exporterResponse: Record<string, string>;
}

export function decodeSolveResponse(buf: Buffer): SolveResponse {
  const exporterResponse: Record<string, string> = {};
  for (const f of readFields(buf)) {
    if (f.field === 1) {
      const [k, v] = readMapEntry(f.data);
      exporterResponse[k] = v;
    }
  }
  return { exporterResponse };
}

/** StatusRequest and the other single-string requests. */
export function encodeStatusRequest(ref: string): Buffer {
  return new ProtoWriter().string(1, ref).finish();
}

export function encodeEmpty(): Buffer {
  return Buffer.alloc(0);
}

export interface Vertex {
  digest: string;
  inputs: string[];
  name: string;
  cached: boolean;
  started?: Date;
  completed?: Date;
  error: string;
}

export interface VertexLog {
  vertex: string;
  timestamp?: Date;
  /** 1 stdout, 2 stderr. */
  stream: number;
  msg: Buffer;
}

export interface VertexWarning {
  vertex: string;
  level: number;
  short: string;
}

export interface StatusResponse {
  vertexes: Vertex[];
  logs: VertexLog[];
  warnings: VertexWarning[];
}

function decodeVertex(buf: Buffer): Vertex {
  const v: Vertex = { digest: "", inputs: [], name: "", cached: false, error: "" };
  for (const f of readFields(buf)) {
    switch (f.field) {
      case 1: v.digest = f.data.toString("utf8"); break;
      case 2: v.inputs.push(f.data.toString("utf8")); break;
      case 3: v.name = f.data.toString("utf8"); break;
      case 4: v.cached = f.varint !== 0n; break;
      case 5: v.started = readTimestamp(f.data); break;
      case 6: v.completed = readTimestamp(f.data); break;
      case 7: v.error = f.data.toString("utf8"); break;
    }
  }
  return v;
}

function decodeVertexLog(buf: Buffer): VertexLog {
  const l: VertexLog = { vertex: "", stream: 0, msg: Buffer.alloc(0) };
  for (const f of readFields(buf)) {
    switch (f.field) {
      case 1: l.vertex = f.data.toString("utf8"); break;
      case 2: l.timestamp = readTimestamp(f.data); break;
      case 3: l.stream = toInt(f.varint); break;
      case 4: l.msg = Buffer.from(f.data); break;
    }
  }
  return l;
}

function decodeVertexWarning(buf: Buffer): VertexWarning {
  const w: VertexWarning = { vertex: "", level: 0, short: "" };
  for (const f of readFields(buf)) {
    if (f.field === 1) w.vertex = f.data.toString("utf8");
    else if (f.field === 2) w.level = toInt(f.varint);
    else if (f.field === 3) w.short = f.data.toString("utf8");
  }
  return w;
}

export function decodeStatusResponse(buf: Buffer): StatusResponse {
  const r: StatusResponse = { vertexes: [], logs: [], warnings: [] };
  for (const f of readFields(buf)) {
    if (f.field === 1) r.vertexes.push(decodeVertex(f.data));
    else if (f.field === 3) r.logs.push(decodeVertexLog(f.data));
    else if (f.field === 4) r.warnings.push(decodeVertexWarning(f.data));
    // 2: VertexStatus (pull/push byte counters) is not shown.
  }
  return r;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface BuildkitVersion {
  package: string;
  version: string;
  revision: string;
}

export interface WorkerRecord {
  id: string;
  labels: Record<string, string>;
  platforms: Platform[];
  version?: BuildkitVersion;
}

export function encodePlatform(p: Platform): ProtoWriter {
  return new ProtoWriter().string(1, p.architecture).string(2, p.os).string(3, p.variant);
}

function decodePlatform(buf: Buffer): Platform {
  const p: Platform = { architecture: "", os: "" };
  for (const f of readFields(buf)) {
    if (f.field === 1) p.architecture = f.data.toString("utf8");
    else if (f.field === 2) p.os = f.data.toString("utf8");
    else if (f.field === 3 && f.data.length > 0) p.variant = f.data.toString("utf8");
  }
  return p;
}

function decodeVersion(buf: Buffer): BuildkitVersion {
  const v: BuildkitVersion = { package: "", version: "", revision: "" };
  for (const f of readFields(buf)) {
    if (f.field === 1) v.package = f.data.toString("utf8");
    else if (f.field === 2) v.version = f.data.toString("utf8");
    else if (f.field === 3) v.revision = f.data.toString("utf8");
  }
  return v;
}

function decodeWorker(buf: Buffer): WorkerRecord {
  const w: WorkerRecord = { id: "", labels: {}, platforms: [] };
  for (const f of readFields(buf)) {
    switch (f.field) {
      case 1: w.id = f.data.toString("utf8"); break;
      case 2: {
        const [k, v] = readMapEntry(f.data);
        w.labels[k] = v;
        break;
      }
      case 3: w.platforms.push(decodePlatform(f.data)); break;
      case 5: w.version = decodeVersion(f.data); break;
    }
  }
  return w;
}

export function decodeListWorkersResponse(buf: Buffer): WorkerRecord[] {
  const out: WorkerRecord[] = [];
  for (const f of readFields(buf)) if (f.field === 1) out.push(decodeWorker(f.data));
  return out;
}

export function decodeInfoResponse(buf: Buffer): BuildkitVersion | undefined {
  for (const f of readFields(buf)) if (f.field === 1) return decodeVersion(f.data);
  return undefined;
}

/** BytesMessage { bytes data = 1 }: one chunk of a session's byte stream. */
export function encodeBytesMessage(data: Buffer): Buffer {
  return new ProtoWriter().bytes(1, data).finish();
}

export function decodeBytesMessage(buf: Buffer): Buffer {
  let out = Buffer.alloc(0);
  for (const f of readFields(buf)) if (f.field === 1) out = Buffer.from(f.data);
  return out;
}
