/**
 * A monotonic clock in milliseconds, as performance.now() but from process.hrtime:
 * the first touch of the global `performance` loads node:perf_hooks (~0.9 ms of every
 * CLI run), which nothing else in a build needs. Only differences of two readings mean
 * anything (the origin is arbitrary).
 */
export function monotonicMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}
