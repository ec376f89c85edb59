/**
 * The Prometheus text exposition format (0.0.4), written by hand: a handful of families computed
 * from Postgres at scrape time need no client library and no process-local registry.
 */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Record<string, string>;

export interface Sample {
  labels?: Labels;
  value: number;
}

export type Family =
  | { name: string; help: string; type: 'counter' | 'gauge'; samples: Sample[] }
  | {
      name: string;
      help: string;
      type: 'histogram';
      bounds: readonly number[];
      series: Array<{ labels: Labels; buckets: number[]; count: number; sum: number }>;
    };

const escapeHelp = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function formatLabels(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (!entries.length) return '';
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

export function exposition(families: Family[]): string {
  let out = '';
  for (const f of families) {
    out += `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
    if (f.type === 'histogram') {
      for (const s of f.series) {
        f.bounds.forEach((b, i) => {
          out += `${f.name}_bucket${formatLabels({ ...s.labels, le: formatValue(b) })} ${s.buckets[i] ?? 0}\n`;
        });
        out += `${f.name}_bucket${formatLabels({ ...s.labels, le: '+Inf' })} ${s.count}\n`;
        out += `${f.name}_sum${formatLabels(s.labels)} ${formatValue(s.sum)}\n`;
        out += `${f.name}_count${formatLabels(s.labels)} ${s.count}\n`;
      }
    } else {
      for (const s of f.samples) out += `${f.name}${formatLabels(s.labels)} ${formatValue(s.value)}\n`;
    }
  }
  return out;
}
