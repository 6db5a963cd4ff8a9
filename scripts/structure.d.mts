// Types of scripts/structure.mjs, for test/structure.test.ts under `npm run typecheck`.
export interface Finding {
  file: string;
  line?: number;
  name?: string;
  lines?: number;
}
export const MAX_FUNCTION_LINES: number;
export const MAX_FILE_LINES: number;
export function scan(root: string): { longFunctions: Finding[]; longFiles: Finding[]; mutableState: Finding[] };
