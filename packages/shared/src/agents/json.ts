/** Small readers for agents' JSON streams (shared by the claude and codex parsers). */
export type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** a finite, non-negative number, else null */
export function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/** One line of a JSON-lines stream as an object; null for anything else (text, arrays, bad JSON). */
export function jsonObjectLine(line: string): Json | null {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return null;
  try {
    const v: unknown = JSON.parse(trimmed);
    return isObject(v) ? v : null;
  } catch {
    return null;
  }
}
