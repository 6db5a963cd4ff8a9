/**
 * The tty renderer driven with a fake TTY stream (isTTY=true, columns) and a
 * fake clock. What it writes is replayed through a tiny terminal emulator
 * (newline, carriage return, cursor up, clear to end of screen) so the checks
 * are about what a user would see on the screen, not about escape sequences.
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import type { BuildEvent } from "../../src/builder/events.js";
import { createRenderer, resolveProgressMode } from "../../src/cli/progress.js";
import { SPINNER, createTtyRenderer } from "../../src/cli/tty.js";

/** A screen that understands what the renderer emits; anything else fails the test. */
class Screen {
  lines: string[] = [""];
  row = 0;
  col = 0;
  feed(s: string): void {
    let i = 0;
    while (i < s.length) {
      const ch = s[i]!;
      if (ch === "\x1b") {
        const m = /^\x1b\[(\d*)([AJ])/.exec(s.slice(i));
        if (!m) throw new Error(`unexpected escape sequence ${JSON.stringify(s.slice(i, i + 8))}`);
        if (m[2] === "A") this.row = Math.max(0, this.row - Number(m[1] || 1));
        else this.lines.splice(this.row + 1), (this.lines[this.row] = this.lines[this.row]!.slice(0, this.col));
        i += m[0].length;
        continue;
      }
      if (ch === "\n") {
        this.row++;
        this.col = 0;
        if (this.lines.length <= this.row) this.lines.push("");
      } else if (ch === "\r") this.col = 0;
      else {
        const line = this.lines[this.row]!.padEnd(this.col);
        this.lines[this.row] = line.slice(0, this.col) + ch + line.slice(this.col + 1);
        this.col++;
      }
      i++;
    }
  }
  text(): string[] {
    return this.lines.slice(0, this.lines[this.lines.length - 1] === "" ? -1 : undefined);
  }
}

function fakeTty(columns = 100) {
  const stream = Object.assign(new PassThrough(), { isTTY: true, columns });
  const screen = new Screen();
  let raw = "";
  stream.on("data", (c: Buffer) => {
    raw += c.toString("utf8");
    screen.feed(c.toString("utf8"));
  });
  return { stream, screen, raw: () => raw };
}

const D1 = `sha256:${"a1".repeat(32)}`;
const D2 = `sha256:${"b2".repeat(32)}`;
const MiB = 1024 * 1024;

function setup(columns = 100) {
  const t = fakeTty(columns);
  let clock = 0;
  const r = createTtyRenderer(t.stream, { now: () => clock, interval: false });
  return { ...t, r, advance: (ms: number) => (clock += ms), emit: (e: BuildEvent) => r.onEvent(e) };
}

describe("tty renderer", () => {
  it("shows a spinner and elapsed time for a running step, then collapses it to one line", () => {
    const { screen, r, advance, emit } = setup();
    emit({ type: "step-start", stage: "build", step: 1, total: 2, instruction: "RUN make all", line: 3 });
    advance(1500);
    r.tick();
    let shown = screen.text();
    expect(shown).toHaveLength(1);
    expect(shown[0]).toBe(`${SPINNER[1]} [build 1/2] RUN make all  1.5s`);
    r.tick();
    expect(screen.text()[0]!.startsWith(SPINNER[2]!)).toBe(true);

    emit({ type: "output", stage: "build", step: 1, stream: "stdout", text: "cc -c a.c\ncc -c b.c\ncc -c c.c\nlinking" });
    shown = screen.text();
    // The last three output lines (the partial one included) under the step.
    expect(shown.slice(1)).toEqual(["    │ cc -c b.c", "    │ cc -c c.c", "    │ linking"]);

    advance(700);
    emit({ type: "step-end", stage: "build", step: 1, total: 2, instruction: "RUN make all", line: 3, cached: false, seconds: 2.2, layer: D1 });
    shown = screen.text();
    expect(shown).toEqual(["✔ [build 1/2] RUN make all  2.2s"]);
    r.close();
  });

  it("marks cached steps CACHED and keeps one line per finished step, in order", () => {
    const { screen, r, emit } = setup();
    const steps = ["FROM base", "COPY . /src", "RUN make", "CMD [\"app\"]"];
    steps.forEach((instruction, i) => {
      emit({ type: "step-start", stage: "app", step: i + 1, total: steps.length, instruction, line: i + 1 });
      emit({ type: "output", stage: "app", step: i + 1, stream: "stderr", text: `noise ${i}\n` });
      emit({ type: "step-end", stage: "app", step: i + 1, total: steps.length, instruction, line: i + 1, cached: i < 2, seconds: i * 0.5, layer: null });
    });
    r.close();
    expect(screen.text()).toEqual([
      "✔ [app 1/4] FROM base  CACHED",
      "✔ [app 2/4] COPY . /src  CACHED",
      "✔ [app 3/4] RUN make  1.0s",
      '✔ [app 4/4] CMD ["app"]  1.5s',
    ]);
  });

  it("a FROM step ends with what was pulled of its base, or how it was resolved; it may end after the next step started", () => {
    const { screen, r, emit } = setup();
    const from = { type: "step-end", stage: "app", step: 1, total: 2, instruction: "FROM base", line: 1, layer: null } as const;
    emit({ type: "step-start", stage: "app", step: 1, total: 2, instruction: "FROM base", line: 1 });
    emit({ type: "step-start", stage: "app", step: 2, total: 2, instruction: "RUN make", line: 2 });
    emit({ ...from, cached: false, reason: `resolved base to ${D1}, pulled ${3 * MiB} bytes in 1.20s`, seconds: 1.25, resolved: "registry", pulledBytes: 3 * MiB });
    emit({ type: "step-end", stage: "app", step: 2, total: 2, instruction: "RUN make", line: 2, cached: false, seconds: 0.5, layer: D2 });
    emit({ ...from, stage: "lib", cached: true, reason: `resolved from cache (${D1})`, seconds: 0, resolved: "cache", pulledBytes: 0 });
    emit({ ...from, stage: "doc", cached: false, reason: `resolved base to ${D1}`, seconds: 0.3, resolved: "registry", pulledBytes: 0 });
    r.close();
    expect(screen.text()).toEqual([
      "✔ [app 1/2] FROM base  pulled 3.0 MiB  1.3s",
      "✔ [app 2/2] RUN make  0.5s",
      "✔ [lib 1/2] FROM base  resolved from cache",
      "✔ [doc 1/2] FROM base  resolved  0.3s",
    ]);
  });

  it("shows a layer being written with bytes and rate, per platform, until it is done", () => {
    const { screen, r, advance, emit } = setup();
    emit({ type: "step-start", stage: "app", step: 2, total: 3, instruction: "RUN make", line: 4, platform: "linux/arm64/v8", emulated: true });
    expect(screen.text()).toEqual([`${SPINNER[0]} [app linux/arm64/v8 2/3] RUN make (emulated)  0.0s`]);
    emit({ type: "layer-write", stage: "app", step: 2, bytes: 8 * MiB, done: false, platform: "linux/arm64/v8" });
    advance(2000);
    r.tick();
    expect(screen.text()[1]).toBe(`${SPINNER[1]} writing layer [app linux/arm64/v8 2]  8.0 MiB  4.0 MiB/s`);
    emit({ type: "layer-write", stage: "app", step: 2, bytes: 9 * MiB, done: true, digest: D1, platform: "linux/arm64/v8" });
    expect(screen.text()).toHaveLength(1);
    r.close();
  });

  it("shows parallel stages side by side while they run", () => {
    const { screen, r, emit } = setup();
    emit({ type: "step-start", stage: "a", step: 1, total: 1, instruction: "RUN one", line: 2 });
    emit({ type: "step-start", stage: "b", step: 1, total: 1, instruction: "RUN two", line: 5 });
    expect(screen.text().map((l) => l.slice(2))).toEqual(["[a 1/1] RUN one  0.0s", "[b 1/1] RUN two  0.0s"]);
    emit({ type: "step-end", stage: "b", step: 1, total: 1, instruction: "RUN two", line: 5, cached: false, seconds: 0.25, layer: null });
    expect(screen.text()).toEqual(["✔ [b 1/1] RUN two  0.3s", `${SPINNER[0]} [a 1/1] RUN one  0.0s`]);
    r.close();
  });

  it("shows bytes, total and rate while pushing, then one line per pushed blob with its size", () => {
    const { screen, r, advance, emit } = setup();
    emit({ type: "progress", action: "push", digest: D1, bytes: 0, total: 4 * MiB });
    advance(1000);
    emit({ type: "progress", action: "push", digest: D1, bytes: 2 * MiB, total: 4 * MiB });
    expect(screen.text()).toEqual([`${SPINNER[0]} push a1a1a1a1a1a1  2.0 MiB / 4.0 MiB  2.0 MiB/s`]);
    advance(1000);
    emit({ type: "progress", action: "push", digest: D1, bytes: 4 * MiB, total: 4 * MiB });
    emit({ type: "push", reference: "127.0.0.1:5000/team/app", digest: D1, status: "uploaded", size: 4 * MiB });
    emit({ type: "push", reference: "127.0.0.1:5000/team/app", digest: D2, status: "exists", size: 1234 });
    r.close();
    expect(screen.text()).toEqual([
      "✔ pushed a1a1a1a1a1a1 to 127.0.0.1:5000/team/app  4.0 MiB  2.0 MiB/s",
      "✔ pushed b2b2b2b2b2b2 to 127.0.0.1:5000/team/app  1.2 KiB exists",
    ]);
  });

  it("cuts lines to the terminal width so none wraps", () => {
    const { screen, r, emit } = setup(40);
    emit({ type: "step-start", stage: "s", step: 1, total: 1, instruction: `RUN ${"x".repeat(100)}`, line: 1 });
    emit({ type: "output", stage: "s", step: 1, stream: "stdout", text: `${"y".repeat(100)}\n` });
    for (const l of screen.text()) expect([...l].length).toBeLessThanOrEqual(39);
    expect(screen.text()).toHaveLength(2);
    r.close();
  });

  it("warnings and written outputs stay on screen above the live area", () => {
    const { screen, r, emit } = setup();
    emit({ type: "step-start", stage: "s", step: 1, total: 1, instruction: "COPY a b", line: 1 });
    emit({ type: "log", level: "warn", message: "Dockerfile:1: something to know" });
    emit({ type: "step-end", stage: "s", step: 1, total: 1, instruction: "COPY a b", line: 1, cached: false, seconds: 0.1, layer: D2 });
    emit({ type: "output-written", reference: "docker-archive:/tmp/x.tar" });
    r.close();
    expect(screen.text()).toEqual(["warning: Dockerfile:1: something to know", "✔ [s 1/1] COPY a b  0.1s", "✔ wrote docker-archive:/tmp/x.tar"]);
  });
});

describe("--progress auto", () => {
  it("is tty on a terminal and plain otherwise; quiet wins", () => {
    const tty = Object.assign(new PassThrough(), { isTTY: true, columns: 80 });
    const pipe = new PassThrough();
    expect(resolveProgressMode("auto", tty)).toBe("tty");
    expect(resolveProgressMode("auto", pipe)).toBe("plain");
    expect(resolveProgressMode("plain", tty)).toBe("plain");
    expect(resolveProgressMode("tty", pipe)).toBe("tty");
    expect(resolveProgressMode("auto", tty, true)).toBe("quiet");
  });

  it("plain prints one line per event, step numbers and prefixed RUN output, no escapes", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (c: Buffer) => (text += c.toString()));
    const r = createRenderer("plain", out);
    r.onEvent({ type: "step-start", stage: "build", step: 2, total: 5, instruction: "RUN echo hi", line: 4 });
    r.onEvent({ type: "output", stage: "build", step: 2, stream: "stdout", text: "hi\npart" });
    r.onEvent({ type: "step-end", stage: "build", step: 2, total: 5, instruction: "RUN echo hi", line: 4, cached: false, reason: "no previous entry", seconds: 0.5, layer: D1 });
    r.close();
    expect(text).toBe(
      "[build 2/5] RUN echo hi\n[build 2] hi\n[build 2] part\n[build 2/5] DONE 0.50s layer a1a1a1a1a1a1 (no previous entry)\n",
    );
    expect(text).not.toContain("\x1b");
  });

  it("plain: a FROM step always says how its base was resolved; reasons naming an option name the flag", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (c: Buffer) => (text += c.toString()));
    const r = createRenderer("plain", out);
    r.onEvent({ type: "step-end", stage: "app", step: 1, total: 2, instruction: "FROM base", line: 1, cached: true, reason: `resolved from cache (${D1})`, seconds: 0, layer: null, resolved: "cache", pulledBytes: 0 });
    r.onEvent({ type: "step-end", stage: "app", step: 2, total: 2, instruction: "RUN make", line: 2, cached: false, reason: "excluded by the noCacheFilter option", seconds: 0.5, layer: null });
    r.close();
    expect(text).toBe(`[app 1/2] CACHED 0.00s (resolved from cache (${D1}))\n[app 2/2] DONE 0.50s (excluded by --no-cache-filter)\n`);
  });
});
