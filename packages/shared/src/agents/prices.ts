/**
 * Model prices, for the running cost estimate that lets a cost budget act before an agent's last
 * line: claude reports `total_cost_usd` only in its final `result` line, codex never reports a
 * cost. Prices are USD per million tokens: input (uncached), output, cache read, cache write.
 *
 * `ORCH_AGENT_PRICES` adds entries in front of the built-in table:
 *   `pattern=in/out[/cache_read[/cache_write]]`, comma-separated, e.g.
 *   `claude-opus-*=5/25,gpt-6*=2/12,*=3/15`
 * A pattern is a model id with `*` wildcards; the first match wins; `*` alone replaces the
 * fallback. A model that matches nothing is priced at the fallback, and the estimate says so.
 * Cache prices default to 10% (read) and 125% (write) of the input price. The table is also in
 * docs/agents.md (a test compares them).
 */
import type { TokenCounts } from './types.ts';

export interface Price {
  pattern: string;
  input: number;
  output: number;
  cacheRead: number;
  cacheWrite: number;
}

const round = (n: number) => Number(n.toFixed(6));

function price(pattern: string, input: number, output: number, cacheRead = input * 0.1, cacheWrite = input * 1.25): Price {
  return { pattern, input, output, cacheRead: round(cacheRead), cacheWrite: round(cacheWrite) };
}

/**
 * Public list prices (USD per million tokens) of current Claude and OpenAI models, as of
 * 2026-12. Later Opus, Sonnet and Haiku releases match the family's pattern.
 */
export const DEFAULT_PRICES: readonly Price[] = [
  price('claude-opus-4-0*', 15, 75),
  price('claude-opus-4-1*', 15, 75),
  price('claude-opus-4-2025*', 15, 75),
  price('claude-3-opus*', 15, 75),
  price('claude-opus-*', 5, 25),
  price('claude-sonnet-*', 3, 15),
  price('claude-3-7-sonnet*', 3, 15),
  price('claude-3-5-sonnet*', 3, 15),
  price('claude-haiku-*', 1, 5),
  price('claude-3-5-haiku*', 0.8, 4),
  // OpenAI: cached input at its own price, no premium for writing the cache
  price('gpt-5-nano*', 0.05, 0.4, 0.005, 0.05),
  price('gpt-5-mini*', 0.25, 2, 0.025, 0.25),
  price('gpt-5*', 1.25, 10, 0.125, 1.25),
  price('codex-mini*', 1.5, 6, 0.375, 1.5),
  price('o4-mini*', 1.1, 4.4, 0.275, 1.1),
  price('o3*', 2, 8, 0.5, 2),
  price('gpt-4.1*', 2, 8, 0.5, 2),
];

/**
 * The price of a model no entry matches: the highest of the table, so that a budget over an
 * unknown model errs on the side of stopping early. `ORCH_AGENT_PRICES` `*=in/out` replaces it.
 */
export const FALLBACK_PRICE: Price = price('*', 15, 75);

export interface PriceTable {
  entries: readonly Price[];
  fallback: Price;
}

export const DEFAULT_PRICE_TABLE: PriceTable = { entries: DEFAULT_PRICES, fallback: FALLBACK_PRICE };

const ENTRY = /^([A-Za-z0-9._:@/*-]+)=(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)(?:\/(\d+(?:\.\d+)?))?(?:\/(\d+(?:\.\d+)?))?$/;

/** Parse `ORCH_AGENT_PRICES` (see the module doc). Throws with the bad entry. */
export function parsePrices(raw: string): Price[] {
  const out: Price[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = ENTRY.exec(part);
    if (!m) throw new Error(`bad price entry "${part}" (expected model=in/out[/cache_read[/cache_write]], USD per million tokens)`);
    const [, pattern, i, o, cr, cw] = m;
    out.push(price(pattern!, Number(i), Number(o), cr === undefined ? undefined : Number(cr), cw === undefined ? undefined : Number(cw)));
  }
  return out;
}

/** The built-in table with the setting's entries in front (`*` replaces the fallback). */
export function priceTable(overrides: readonly Price[]): PriceTable {
  const star = overrides.filter((p) => p.pattern === '*').at(-1);
  return { entries: [...overrides.filter((p) => p.pattern !== '*'), ...DEFAULT_PRICES], fallback: star ?? FALLBACK_PRICE };
}

function matches(pattern: string, model: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(model);
}

export function priceOf(table: PriceTable, model: string): { price: Price; fallback: boolean } {
  const hit = table.entries.find((p) => matches(p.pattern, model));
  return hit ? { price: hit, fallback: false } : { price: table.fallback, fallback: true };
}

export interface CostEstimate {
  usd: number;
  /** models priced at the fallback (unknown to the table) */
  fallbackModels: string[];
}

/** The cost of token counts by model. */
export function estimateCost(table: PriceTable, models: Record<string, TokenCounts>): CostEstimate {
  let usd = 0;
  const fallbackModels: string[] = [];
  for (const [model, t] of Object.entries(models)) {
    const { price: p, fallback } = priceOf(table, model);
    if (fallback) fallbackModels.push(model);
    usd += (t.input * p.input + t.output * p.output + t.cacheRead * p.cacheRead + t.cacheWrite * p.cacheWrite) / 1_000_000;
  }
  return { usd, fallbackModels };
}

/** The price table as the reference documents it. */
export function describePrices(table: PriceTable = DEFAULT_PRICE_TABLE): string {
  const fmt = (n: number) => String(Number(n.toFixed(4)));
  return [...table.entries, table.fallback].map((p) => `${p.pattern}=${fmt(p.input)}/${fmt(p.output)}/${fmt(p.cacheRead)}/${fmt(p.cacheWrite)}`).join(', ');
}
