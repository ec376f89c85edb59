/**
 * The soak's verdict (bench/soak-verdict.ts): the soak itself is a 30-minute bench, but the rule
 * that turns its samples into PASS/FAIL is pure and must be able to fail.
 */
import { describe, expect, it } from 'vitest';
import { soakVerdict, type SoakSample } from '../bench/soak-verdict.ts';

/** Samples every 30 s for `minutes`; `f` gives the values at time t (seconds). */
function run(minutes: number, f: (t: number) => { rss?: number; fds?: number; conns?: number; latency?: number }) {
  const samples: SoakSample[] = [];
  const latencies: Array<{ atS: number; ms: number }> = [];
  for (let t = 30; t <= minutes * 60; t += 30) {
    const v = f(t);
    samples.push({ atS: t, rssMb: { worker: v.rss ?? 300, reaper: 140 }, fds: { worker: v.fds ?? 40, reaper: 20 }, pgConns: v.conns ?? 14 });
    for (let i = 0; i < 20; i++) latencies.push({ atS: t - 29 + i, ms: (v.latency ?? 2000) + (i % 5) * 10 });
  }
  return soakVerdict(samples, latencies, { warmupS: 300 });
}
const failing = (r: ReturnType<typeof run>) => r.checks.filter((c) => !c.ok).map((c) => c.measure);

describe('soak verdict', () => {
  it('a flat run passes, and the warm-up is left out of the baseline', () => {
    const r = run(30, (t) => ({ rss: t < 300 ? 200 + t / 3 : 300 + (t % 60 === 0 ? 2 : 0), fds: 38 + (t % 90 === 0 ? 6 : 0) }));
    expect(failing(r)).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.windows.baseline[0]).toBe(300);
    expect(Math.abs(r.slopes.worker!)).toBeLessThan(0.2);
  });

  it('RSS growing 2.5 MB/min from 300 MB fails (the last third is > 10 % above the first); 0.8 MB/min passes but shows in the slope', () => {
    const leak = run(30, (t) => ({ rss: 300 + (t / 60) * 2.5 }));
    expect(failing(leak)).toEqual(['worker RSS (MB, median)']);
    expect(leak.slopes.worker).toBeCloseTo(2.5, 1);
    const slow = run(30, (t) => ({ rss: 300 + (t / 60) * 0.8 }));
    expect(failing(slow)).toEqual([]);
    expect(slow.slopes.worker).toBeCloseTo(0.8, 1);
  });

  it('latency creeping up fails; a one-off spike in the middle does not', () => {
    expect(failing(run(30, (t) => ({ latency: 2000 + t })))).toEqual(['task latency p50 (ms)']);
    expect(failing(run(30, (t) => ({ latency: t > 900 && t < 1000 ? 9000 : 2000 })))).toEqual([]);
  });

  it('a typical fd count or connection count above the baseline peak is growth', () => {
    expect(failing(run(30, (t) => ({ fds: 40 + Math.floor(t / 120) })))).toEqual(['worker open fds']);
    expect(failing(run(30, (t) => ({ conns: t > 1200 ? 20 : 14 })))).toEqual(['Postgres connections']);
  });

  it('too short a run is an error, not a pass', () => {
    expect(() => run(5, () => ({}))).toThrow(/too few samples/);
  });
});
