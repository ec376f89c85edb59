/**
 * A run's transcript as a person reads it: the agent's messages, each tool call with its command
 * or file, the tool's result, retries and errors, the final result — not raw stream-json. The
 * stream parsers build it (claude.ts, codex.ts); `orch logs` and the dashboard print it, and
 * `agent_runs.transcript` keeps it (the raw stdout+stderr tail stays in `log_tail`).
 */

export const TRANSCRIPT_KINDS = ['start', 'message', 'thinking', 'tool', 'output', 'retry', 'warning', 'error', 'result'] as const;
export type TranscriptKind = (typeof TRANSCRIPT_KINDS)[number];

export interface TranscriptEntry {
  /** sequence number within the run (stable across truncation: the key of an entry) */
  n: number;
  /** milliseconds since the parser was created (≈ since the agent started) */
  at: number;
  kind: TranscriptKind;
  text: string;
  /** a tool result that reported failure */
  failed?: boolean;
}

/** Entries kept per run (the newest), and the longest text of one entry. */
const TRANSCRIPT_MAX_ENTRIES = 400;
const MAX_TEXT = 2000;
const MAX_OUTPUT_LINES = 6;

export interface TranscriptBuffer {
  add(kind: TranscriptKind, text: string, opts?: { failed?: boolean }): void;
  entries(): TranscriptEntry[];
}

export function createTranscript(now: () => number = Date.now, max = TRANSCRIPT_MAX_ENTRIES): TranscriptBuffer {
  const start = now();
  const list: TranscriptEntry[] = [];
  let n = 0;
  return {
    add(kind, text, opts = {}) {
      let t = clip(kind === 'output' ? firstLines(text, MAX_OUTPUT_LINES) : text.trim());
      if (t.trim() === '') {
        if (kind !== 'output') return;
        t = '(no output)';
      }
      const e: TranscriptEntry = { n: n++, at: Math.max(0, now() - start), kind, text: t };
      if (opts.failed) e.failed = true;
      list.push(e);
      if (list.length > max) list.splice(0, list.length - max);
    },
    entries: () => list.slice(),
  };
}

function clip(s: string): string {
  return s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT - 1)}…` : s;
}

function firstLines(s: string, n: number): string {
  const lines = s.replace(/\s+$/, '').split('\n');
  if (lines.length <= n) return lines.join('\n');
  return `${lines.slice(0, n).join('\n')}\n… (${lines.length - n} more lines)`;
}

const MARK: Readonly<Record<TranscriptKind, string>> = {
  start: '▸',
  message: '»',
  thinking: '…',
  tool: '$',
  output: '│',
  retry: '↻',
  warning: '!',
  error: '✗',
  result: '■',
};

/** One entry as text lines (continuation lines indented under the first). */
export function formatEntry(e: TranscriptEntry): string {
  const mark = e.kind === 'output' && e.failed ? '✗' : MARK[e.kind];
  const [first = '', ...rest] = e.text.split('\n');
  const indent = e.kind === 'output' ? '    ' : '  ';
  return [`${indent}${mark} ${first}`, ...rest.map((l) => `${indent}  ${l}`)].join('\n');
}

/** A transcript as a person reads it. */
export function formatTranscript(entries: readonly TranscriptEntry[]): string {
  return entries.map(formatEntry).join('\n');
}

/** What a tool call did, in a few words: the command of Bash, the file of Read/Edit/Write, a pattern. */
export function describeToolCall(name: string, input: unknown): string {
  const i = (typeof input === 'object' && input !== null ? input : {}) as Record<string, unknown>;
  const s = (k: string) => (typeof i[k] === 'string' ? (i[k] as string) : null);
  const detail =
    s('command') ??
    s('file_path') ??
    s('notebook_path') ??
    s('path') ??
    (s('pattern') !== null ? `${s('pattern')}${s('path') ? ` in ${s('path')}` : ''}` : null) ??
    s('url') ??
    s('query') ??
    s('description') ??
    s('prompt');
  if (detail !== null) return `${name}: ${detail}`;
  const json = JSON.stringify(i);
  return json === '{}' ? name : `${name} ${json.length > 200 ? `${json.slice(0, 199)}…` : json}`;
}
