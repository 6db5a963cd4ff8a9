/**
 * Events a build emits; the CLI renders them (plain, tty, json) and the library
 * hands them to the caller (an `onEvent` callback or an async iterator). Every
 * event is a plain JSON-serialisable object with a `type`; `--progress=json`
 * prints exactly these, one per line. `EVENT_SCHEMAS` describes each type's
 * fields at run time, so the JSON stream can be validated against the types.
 */
import type { ErrorCode } from "../error-codes.js";

/** A build event. `type` tells which one; every other field is plain JSON. */
export type BuildEvent =
  | { type: "log"; level: "info" | "warn"; message: string }
  | { type: "step-start"; stage: string; step: number; total: number; instruction: string; line: number; platform?: string; emulated?: boolean }
  // A FROM step's step-end also has `resolved` (its base from an earlier build's record, or its registry) and `pulledBytes` (of its layers, this build).
  | { type: "step-end"; stage: string; step: number; total: number; instruction: string; line: number; cached: boolean; reason?: string; seconds: number; layer: string | null; resolved?: "cache" | "registry"; pulledBytes?: number; platform?: string }
  | { type: "output"; stage: string; step: number; stream: "stdout" | "stderr"; text: string; platform?: string }
  | { type: "push"; reference: string; digest: string; status: "exists" | "mounted" | "uploaded"; size: number }
  | { type: "progress"; action: "push" | "pull" | "mount" | "exists"; digest: string; bytes: number; total?: number }
  | { type: "output-written"; reference: string }
  | { type: "layer-write"; stage: string; step: number; bytes: number; done: boolean; digest?: string; platform?: string }
  | { type: "error"; code: ErrorCode | "INTERNAL"; message: string }
  | { type: "result"; digest: string; references: string[]; size: number };

/** Receives build events, in order. It must not throw. */
export type EventSink = (e: BuildEvent) => void;

/** The event types, as a runtime list. */
export type BuildEventType = BuildEvent["type"];

type FieldKind = "string" | "number" | "boolean" | "string[]" | "string|null" | { enum: readonly string[] };
interface FieldSpec {
  kind: FieldKind;
  optional?: boolean;
}
type Schema = Record<string, FieldSpec>;

const s = (kind: FieldKind, optional = false): FieldSpec => ({ kind, optional });

/**
 * The fields of every event type, mirroring `BuildEvent` above (the
 * `satisfies` clause makes a new event type without a schema a compile error).
 */
export const EVENT_SCHEMAS = {
  log: { level: s({ enum: ["info", "warn"] }), message: s("string") },
  "step-start": {
    stage: s("string"),
    step: s("number"),
    total: s("number"),
    instruction: s("string"),
    line: s("number"),
    platform: s("string", true),
    emulated: s("boolean", true),
  },
  "step-end": {
    stage: s("string"),
    step: s("number"),
    total: s("number"),
    instruction: s("string"),
    line: s("number"),
    cached: s("boolean"),
    reason: s("string", true),
    seconds: s("number"),
    layer: s("string|null"),
    resolved: s({ enum: ["cache", "registry"] }, true),
    pulledBytes: s("number", true),
    platform: s("string", true),
  },
  output: { stage: s("string"), step: s("number"), stream: s({ enum: ["stdout", "stderr"] }), text: s("string"), platform: s("string", true) },
  push: { reference: s("string"), digest: s("string"), status: s({ enum: ["exists", "mounted", "uploaded"] }), size: s("number") },
  progress: { action: s({ enum: ["push", "pull", "mount", "exists"] }), digest: s("string"), bytes: s("number"), total: s("number", true) },
  "output-written": { reference: s("string") },
  "layer-write": { stage: s("string"), step: s("number"), bytes: s("number"), done: s("boolean"), digest: s("string", true), platform: s("string", true) },
  error: { code: s("string"), message: s("string") },
  result: { digest: s("string"), references: s("string[]"), size: s("number") },
} as const satisfies Record<BuildEventType, Schema>;

function kindOk(kind: FieldKind, v: unknown): boolean {
  if (typeof kind === "object") return typeof v === "string" && kind.enum.includes(v);
  switch (kind) {
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "boolean":
      return typeof v === "boolean";
    case "string[]":
      return Array.isArray(v) && v.every((x) => typeof x === "string");
    case "string|null":
      return v === null || typeof v === "string";
  }
}

function kindName(kind: FieldKind): string {
  return typeof kind === "object" ? kind.enum.map((e) => JSON.stringify(e)).join(" | ") : kind;
}

/**
 * Checks a value (e.g. one parsed line of `--progress=json`) against the event
 * schemas: a known `type`, every required field of the right kind, no unknown
 * fields. Returns the problems found; an empty list means a valid event.
 */
export function validateEvent(value: unknown): string[] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return ["an event is a JSON object"];
  const obj = value as Record<string, unknown>;
  const type = obj.type;
  if (typeof type !== "string" || !Object.hasOwn(EVENT_SCHEMAS, type)) return [`unknown event type ${JSON.stringify(type)}`];
  const schema: Schema = EVENT_SCHEMAS[type as BuildEventType];
  const problems: string[] = [];
  for (const [field, spec] of Object.entries(schema)) {
    if (!Object.hasOwn(obj, field) || obj[field] === undefined) {
      if (!spec.optional) problems.push(`${type}: missing field "${field}"`);
      continue;
    }
    if (!kindOk(spec.kind, obj[field])) problems.push(`${type}: field "${field}" should be ${kindName(spec.kind)}, got ${JSON.stringify(obj[field])}`);
  }
  for (const field of Object.keys(obj)) {
    if (field !== "type" && !Object.hasOwn(schema, field)) problems.push(`${type}: unknown field "${field}"`);
  }
  return problems;
}

/** Type guard form of validateEvent. */
export function isBuildEvent(value: unknown): value is BuildEvent {
  return validateEvent(value).length === 0;
}

/**
 * An unbounded queue that turns a callback stream of events into an async
 * iterator: `push` from the sink, `end` (or `fail`) when the producer is done.
 * Iteration ends after the last queued event once ended.
 */
export function eventQueue<T>(): { push(e: T): void; end(): void; fail(err: unknown): void; iterable: AsyncIterable<T> } {
  const items: T[] = [];
  let done = false;
  let error: { err: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const iterable: AsyncIterable<T> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (items.length > 0) {
          yield items.shift()!;
          continue;
        }
        if (error) throw error.err;
        if (done) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
  return {
    push(e) {
      if (done) return;
      items.push(e);
      notify();
    },
    end() {
      done = true;
      notify();
    },
    fail(err) {
      error = { err };
      done = true;
      notify();
    },
    iterable,
  };
}
