/** Small text formatters shared by the renderers and summaries. */

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** "sha256:0123456789abcdef..." -> "0123456789ab", as docker shows image IDs. */
export function shortDigest(d: string): string {
  return d.replace(/^sha256:/, "").slice(0, 12);
}

/** A step's stage as shown: "build", or "final linux/arm64" in multi-platform builds. */
export function stageLabel(e: { stage: string; platform?: string }): string {
  return e.platform ? `${e.stage} ${e.platform}` : e.stage;
}
