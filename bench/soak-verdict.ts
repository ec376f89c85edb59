/**
 * The soak's verdict, a pure function of its samples (tested in tests/soak-verdict.test.ts).
 *
 * The first minutes are warm-up (V8 grows its heap to a working size, Postgres and the page
 * cache fill) and are left out. The rest is split in thirds; the first third is the baseline
 * and the last third is compared with it:
 * - RSS of each process: median of the last third within +10 % of the baseline median;
 * - task latency: p50 over every task finished in the last third within +10 % of the baseline's;
 * - open fds and Postgres connections: the median of the last third no higher than the highest
 *   baseline sample (they jump with in-flight git processes and pool use, so only a rise of the
 *   typical value is growth).
 * The RSS slope over the steady part (least squares, MB per minute) is reported too.
 */
import { percentile } from './support.ts';

export interface SoakSample {
  atS: number;
  /** resident set size per sampled process, MB */
  rssMb: Record<string, number>;
  /** open fds per sampled process */
  fds: Record<string, number>;
  pgConns: number;
}

export interface SoakCheck {
  measure: string;
  baseline: number;
  last: number;
  /** "+3.1 %" or "+2" */
  drift: string;
  limit: string;
  ok: boolean;
}

const DRIFT_LIMIT = 0.1;

const median = (xs: number[]) => percentile(xs, 50);

function slopePerMin(points: Array<[number, number]>): number {
  if (points.length < 2) return 0;
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 60;
}

const pct = (base: number, last: number) => (base === 0 ? 0 : (last - base) / base);
const signed = (x: number, digits: number) => `${x >= 0 ? '+' : ''}${x.toFixed(digits)}`;

export function soakVerdict(
  samples: SoakSample[],
  latencies: Array<{ atS: number; ms: number }>,
  opts: { warmupS: number },
): { checks: SoakCheck[]; slopes: Record<string, number>; windows: { baseline: [number, number]; last: [number, number] }; ok: boolean } {
  const steady = samples.filter((s) => s.atS > opts.warmupS);
  if (steady.length < 3) throw new Error(`too few samples after the ${opts.warmupS} s warm-up (${steady.length}); run longer or sample more often`);
  const third = Math.max(1, Math.floor(steady.length / 3));
  const base = steady.slice(0, third);
  const last = steady.slice(-third);
  // (from, to] in seconds since the start: a sample covers the interval that ends at it
  const windows = {
    baseline: [opts.warmupS, base[base.length - 1]!.atS] as [number, number],
    last: [steady[steady.length - third - 1]!.atS, last[last.length - 1]!.atS] as [number, number],
  };

  const checks: SoakCheck[] = [];
  const relative = (measure: string, b: number, l: number) => {
    const d = pct(b, l);
    checks.push({ measure, baseline: b, last: l, drift: `${signed(d * 100, 1)} %`, limit: `≤ +${DRIFT_LIMIT * 100} %`, ok: d <= DRIFT_LIMIT });
  };
  const noGrowth = (measure: string, pick: (s: SoakSample) => number) => {
    const b = Math.max(...base.map(pick));
    const l = median(last.map(pick));
    checks.push({ measure, baseline: b, last: l, drift: signed(l - b, 0), limit: 'last median ≤ baseline max', ok: l <= b });
  };

  const slopes: Record<string, number> = {};
  for (const proc of Object.keys(steady[0]!.rssMb)) {
    relative(`${proc} RSS (MB, median)`, median(base.map((s) => s.rssMb[proc]!)), median(last.map((s) => s.rssMb[proc]!)));
    slopes[proc] = slopePerMin(steady.map((s) => [s.atS, s.rssMb[proc]!]));
  }
  const inWindow = (w: [number, number]) => latencies.filter((l) => l.atS > w[0] && l.atS <= w[1]).map((l) => l.ms);
  relative('task latency p50 (ms)', percentile(inWindow(windows.baseline), 50), percentile(inWindow(windows.last), 50));
  for (const proc of Object.keys(steady[0]!.fds)) noGrowth(`${proc} open fds`, (s) => s.fds[proc]!);
  noGrowth('Postgres connections', (s) => s.pgConns);
  return { checks, slopes, windows, ok: checks.every((c) => c.ok) };
}
