/**
 * The run monitor: fed every stdout line of an agent, it keeps the parser's picture of the run
 * (usage, cost, session, transcript) and decides when orch must stop the agent before it ends by
 * itself — a budget (ORCH_AGENT_MAX_COST_USD, against the reported cost or, until the agent
 * reports one, the running estimate from its per-message token usage and the price table;
 * ORCH_AGENT_MAX_TOKENS) or a stall (ORCH_AGENT_STALL_S without a progress event: retry and
 * reconnect notices do not count). Pure: the clock is passed in, and the caller acts on the
 * verdict (SIGTERM to the process group → grace → SIGKILL).
 */
import { estimateCost, type PriceTable } from './prices.ts';
import type { AgentStreamParser, AgentUsage } from './types.ts';

export interface MonitorLimits {
  /** 0 = no cost budget */
  maxCostUsd: number;
  /** 0 = no token budget (input, cached included, plus output) */
  maxTokens: number;
  /** 0 = no stall detection */
  stallS: number;
  prices: PriceTable;
}

export type MonitorStopReason = 'budget_exceeded' | 'stalled';

export interface MonitorStop {
  reason: MonitorStopReason;
  /** in words, with the figure and the limit */
  detail: string;
}

export type CostSource = 'reported' | 'estimated' | 'estimated_fallback';

export interface RunCost {
  usd: number | null;
  source: CostSource | null;
  /** models priced at the fallback */
  fallbackModels: string[];
}

export interface RunMonitor {
  /** a stdout line; returns a stop verdict the first time a budget is exceeded */
  onLine(line: string, nowMs: number): MonitorStop | null;
  /** the stall watchdog, called on a timer; returns a stop verdict once */
  check(nowMs: number): MonitorStop | null;
  usage(): AgentUsage;
  cost(): RunCost;
  /** the stop decided so far, if any */
  stopped(): MonitorStop | null;
  parser: AgentStreamParser;
}

const usd = (n: number) => `$${n < 1 ? n.toFixed(4) : n.toFixed(2)}`;
const int = (n: number) => Math.round(n).toLocaleString('en-US');

/** The cost of a run: what the agent reported, else the estimate from its token usage. */
export function runCost(usage: AgentUsage, prices: PriceTable): RunCost {
  if (usage.costUsd !== null) return { usd: usage.costUsd, source: 'reported', fallbackModels: [] };
  if (Object.keys(usage.models).length === 0) return { usd: null, source: null, fallbackModels: [] };
  const e = estimateCost(prices, usage.models);
  return { usd: e.usd, source: e.fallbackModels.length > 0 ? 'estimated_fallback' : 'estimated', fallbackModels: e.fallbackModels };
}

function describeCost(c: RunCost): string {
  if (c.usd === null) return 'no cost known';
  switch (c.source) {
    case 'reported':
      return `${usd(c.usd)} (reported by the agent)`;
    case 'estimated_fallback':
      return `${usd(c.usd)} (estimated from its token usage; ${c.fallbackModels.join(', ')} priced at the fallback price, see ORCH_AGENT_PRICES)`;
    default:
      return `${usd(c.usd)} (estimated from its token usage and the price table)`;
  }
}

export function createRunMonitor(parser: AgentStreamParser, limits: MonitorLimits, startMs: number): RunMonitor {
  let lastProgressMs = startMs;
  let lastNoise: string | null = null;
  let stop: MonitorStop | null = null;

  function budgets(): MonitorStop | null {
    const u = parser.usage();
    // the agent's last line (claude `result`, codex turn end): it is exiting, nothing left to save
    if (u.final) return null;
    if (limits.maxCostUsd > 0) {
      const c = runCost(u, limits.prices);
      if (c.usd !== null && c.usd > limits.maxCostUsd) {
        return { reason: 'budget_exceeded', detail: `the run cost ${describeCost(c)}, over the budget ORCH_AGENT_MAX_COST_USD=${limits.maxCostUsd}` };
      }
    }
    if (limits.maxTokens > 0 && u.tokensIn !== null) {
      const total = u.tokensIn + (u.tokensOut ?? 0);
      if (total > limits.maxTokens) {
        const how = u.tokensEstimated ? 'estimated from the stream\'s text' : 'reported in its stream';
        return {
          reason: 'budget_exceeded',
          detail: `the run used ${int(total)} tokens (${int(u.tokensIn)} in, cached included, + ${int(u.tokensOut ?? 0)} out; ${how}), over the budget ORCH_AGENT_MAX_TOKENS=${limits.maxTokens}`,
        };
      }
    }
    return null;
  }

  return {
    parser,
    onLine(line, nowMs) {
      const effect = parser.onLine(line);
      if (effect.progress) lastProgressMs = nowMs;
      else if (line.trim() !== '') lastNoise = line.trim();
      if (stop) return null;
      const s = budgets();
      if (s) stop = s;
      return s;
    },
    check(nowMs) {
      if (stop || limits.stallS <= 0) return null;
      const idleS = (nowMs - lastProgressMs) / 1000;
      if (idleS < limits.stallS) return null;
      const noise = lastNoise ? `; its last line: ${lastNoise.length > 300 ? `${lastNoise.slice(0, 299)}…` : lastNoise}` : '';
      stop = { reason: 'stalled', detail: `no progress (message, tool call or item) for ${Math.round(idleS)} s, ORCH_AGENT_STALL_S=${limits.stallS}${noise}` };
      return stop;
    },
    usage: () => parser.usage(),
    cost: () => runCost(parser.usage(), limits.prices),
    stopped: () => stop,
  };
}
