/**
 * Events a build emits; the CLI renders them (plain, tty, json) and the library
 * hands them to the caller. Every event is a plain JSON-serialisable object.
 */
export type BuildEvent =
  | { type: "log"; level: "info" | "warn"; message: string }
  | { type: "step-start"; stage: string; step: number; total: number; instruction: string; line: number }
  | { type: "step-end"; stage: string; step: number; total: number; instruction: string; line: number; cached: boolean; reason?: string; seconds: number; layer: string | null }
  | { type: "output"; stage: string; step: number; stream: "stdout" | "stderr"; text: string }
  | { type: "push"; reference: string; digest: string; status: "exists" | "mounted" | "uploaded"; size: number }
  | { type: "result"; digest: string; references: string[]; size: number };

export type EventSink = (e: BuildEvent) => void;
