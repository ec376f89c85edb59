/**
 * The whole environment, validated once at start (zod). Nothing else in orch reads
 * `process.env`. A bad value stops the process with a message naming the variable.
 */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

const FALSE = new Set(['false', '0', 'no', 'off', '']);
const TRUE = new Set(['true', '1', 'yes', 'on']);

const bool = (dflt: boolean) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return dflt;
      const s = v.trim().toLowerCase();
      if (TRUE.has(s)) return true;
      if (FALSE.has(s)) return false;
      ctx.addIssue({ code: 'custom', message: `expected true/false, got "${v}"` });
      return z.NEVER;
    });

const num = (dflt: number, opts: { min?: number; int?: boolean } = {}) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return dflt;
      const n = Number(v);
      if (!Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
        ctx.addIssue({
          code: 'custom',
          message: `expected ${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''}, got "${v}"`,
        });
        return z.NEVER;
      }
      return n;
    });

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));

const url = optionalString.refine((v) => v === undefined || /^https?:\/\/[^\s]+$/.test(v), 'expected an http(s) URL');

const schema = z.object({
  DATABASE_URL: optionalString.refine(
    (v) => v === undefined || /^postgres(ql)?:\/\//.test(v),
    'expected a postgres:// URL',
  ),
  ORCH_HOME: optionalString,
  ORCH_EMBEDDED_PG_PORT: num(54329, { int: true, min: 1 }),
  ORCH_API_PORT: num(8080, { int: true, min: 0 }),
  ORCH_API_HOST: optionalString,
  ORCH_API_TOKEN: optionalString,
  ORCH_API_BODY_LIMIT_BYTES: num(1_048_576, { int: true, min: 1024 }),
  ORCH_MAX_CONCURRENCY: num(4, { int: true, min: 1 }),
  ORCH_WORKER_SLOTS: num(4, { int: true, min: 1 }),
  ORCH_HOST_ID: optionalString,
  ORCH_WORKTREE_ROOT: optionalString,
  ORCH_AGENT: z.enum(['claude', 'codex', 'command', 'demo']).optional().default('demo'),
  ORCH_AGENT_CMD: optionalString,
  ORCH_DEMO_DELAY_MS: num(300, { int: true, min: 0 }),
  ORCH_AGENT_MODEL: optionalString,
  ORCH_CLAUDE_BIN: optionalString,
  ORCH_CLAUDE_MAX_TURNS: z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) {
        ctx.addIssue({ code: 'custom', message: `expected an integer >= 1, got "${v}"` });
        return z.NEVER;
      }
      return n;
    }),
  ORCH_CLAUDE_PERMISSION_MODE: optionalString,
  /** comma-separated; unset → the adapter's default list; "none" → no --allowedTools flag */
  ORCH_CLAUDE_ALLOWED_TOOLS: optionalString,
  ORCH_CODEX_BIN: optionalString,
  ORCH_PLANE_RECONCILE_S: num(60, { min: 0 }),
  ORCH_OUTBOX_INTERVAL_S: num(2, { min: 0.05 }),
  ORCH_STOP_STATUS_ENABLED: bool(true),
  ORCH_STOP_GRACE_S: num(5, { min: 0 }),
  ORCH_REAPER_ENABLED: bool(true),
  ORCH_REAPER_INTERVAL_S: num(5, { min: 0.05 }),
  ORCH_REAPER_DEAD_TICKS: num(2, { int: true, min: 1 }),
  ORCH_REAPER_MAX_RUNNING_S: num(7200, { min: 1 }),
  ORCH_REAPER_FINALIZE_GRACE_S: num(300, { min: 0 }),
  ORCH_LEASE_RECLAIM_ENABLED: bool(true),
  ORCH_MERGE_LEASE_TTL_S: num(900, { min: 1 }),
  ORCH_MAX_REVIEW_ROUNDS: num(3, { int: true, min: 0 }),
  ORCH_JOB_MAX_ATTEMPTS: num(3, { int: true, min: 1 }),
  ORCH_HEARTBEAT_INTERVAL_S: num(2, { min: 0.05 }),
  ORCH_HEARTBEAT_TIMEOUT_S: num(10, { min: 0.1 }),
  ORCH_WORKER_SHUTDOWN_S: num(30, { min: 0 }),
  ORCH_AGENT_TIMEOUT_S: num(3600, { min: 1 }),
  ORCH_AGENT_MAX_COST_USD: num(0, { min: 0 }),
  ORCH_RETRY_BACKOFF_BASE_S: num(10, { min: 0 }),
  ORCH_CANCEL_POLL_S: num(1, { min: 0.05 }),
  ORCH_DISPATCH_POLL_S: num(2, { min: 0.05 }),
  ORCH_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional().default('info'),
  PLANE_BASE_URL: url,
  PLANE_API_KEY: optionalString,
  PLANE_WORKSPACE_SLUG: optionalString,
  PLANE_WEBHOOK_SECRET: optionalString,
  PLANE_BOT_USER_ID: optionalString,
  PLANE_STATE_START: optionalString,
  PLANE_STATE_STOP: optionalString,
  PLANE_STATE_IN_PROGRESS: optionalString,
  PLANE_STATE_IN_REVIEW: optionalString,
  PLANE_STATE_DONE: optionalString,
  PLANE_STATE_CANCELLED: optionalString,
  PLANE_STATE_BLOCKED: optionalString,
  GITEA_BASE_URL: url,
  GITEA_TOKEN: optionalString,
});

export type RawEnv = z.input<typeof schema>;
type Parsed = z.output<typeof schema>;

export interface Config {
  databaseUrl: string | undefined;
  home: string;
  embeddedPgPort: number;
  api: { port: number; host: string; token: string | undefined; bodyLimitBytes: number };
  maxConcurrency: number;
  workerSlots: number;
  hostId: string;
  worktreeRoot: string;
  agent: {
    kind: Parsed['ORCH_AGENT'];
    command: string | undefined;
    demoDelayMs: number;
    timeoutS: number;
    maxCostUsd: number;
    /** `ORCH_AGENT_MODEL`: passed as `--model` to claude / codex */
    model?: string | undefined;
    claude?: { bin: string | undefined; maxTurns: number | undefined; permissionMode: string | undefined; allowedTools: string[] | undefined };
    codex?: { bin: string | undefined };
  };
  /** the tracker's background loops: outbox delivery and the reconciliation poll (0 = off) */
  tracker: { outboxIntervalS: number; reconcileS: number };
  stop: { enabled: boolean; graceS: number; pollS: number };
  reaper: {
    enabled: boolean;
    intervalS: number;
    deadTicks: number;
    maxRunningS: number;
    finalizeGraceS: number;
    leaseReclaimEnabled: boolean;
    mergeLeaseTtlS: number;
  };
  maxReviewRounds: number;
  jobMaxAttempts: number;
  heartbeat: { intervalS: number; timeoutS: number };
  workerShutdownS: number;
  retryBackoffBaseS: number;
  dispatchPollS: number;
  logLevel: Parsed['ORCH_LOG_LEVEL'];
  plane: { baseUrl: string; apiKey: string; workspaceSlug: string; webhookSecret: string | undefined; botUserId: string | undefined } | null;
  planeWebhookSecret: string | undefined;
  planeStates: { start: string; stop: string; in_progress: string; in_review: string; done: string; cancelled: string; blocked: string };
  gitea: { baseUrl: string; token: string } | null;
}

export class ConfigError extends Error {
  readonly issues: string[];
  constructor(issues: string[]) {
    super(`invalid configuration:\n${issues.map((i) => `  ${i}`).join('\n')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Parse an environment (default: the process's). Throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = schema.safeParse(env);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => `${String(i.path[0] ?? '?')}: ${i.message}`),
    );
  }
  const e = result.data;
  const issues: string[] = [];
  if (e.ORCH_AGENT === 'command' && !e.ORCH_AGENT_CMD) issues.push('ORCH_AGENT_CMD: required when ORCH_AGENT=command');
  if (e.ORCH_HEARTBEAT_TIMEOUT_S <= e.ORCH_HEARTBEAT_INTERVAL_S)
    issues.push('ORCH_HEARTBEAT_TIMEOUT_S: must be greater than ORCH_HEARTBEAT_INTERVAL_S');
  const planeVars = [e.PLANE_BASE_URL, e.PLANE_API_KEY, e.PLANE_WORKSPACE_SLUG];
  if (planeVars.some(Boolean) && !planeVars.every(Boolean))
    issues.push('PLANE_BASE_URL, PLANE_API_KEY, PLANE_WORKSPACE_SLUG: set all three or none');
  if ((e.GITEA_BASE_URL && !e.GITEA_TOKEN) || (!e.GITEA_BASE_URL && e.GITEA_TOKEN))
    issues.push('GITEA_BASE_URL, GITEA_TOKEN: set both or neither');
  if (issues.length) throw new ConfigError(issues);

  const home = path.resolve(e.ORCH_HOME ?? '.orch');
  return {
    databaseUrl: e.DATABASE_URL,
    home,
    embeddedPgPort: e.ORCH_EMBEDDED_PG_PORT,
    api: { port: e.ORCH_API_PORT, host: e.ORCH_API_HOST ?? '127.0.0.1', token: e.ORCH_API_TOKEN, bodyLimitBytes: e.ORCH_API_BODY_LIMIT_BYTES },
    maxConcurrency: e.ORCH_MAX_CONCURRENCY,
    workerSlots: e.ORCH_WORKER_SLOTS,
    hostId: e.ORCH_HOST_ID ?? os.hostname(),
    worktreeRoot: path.resolve(e.ORCH_WORKTREE_ROOT ?? path.join(home, 'worktrees')),
    agent: {
      kind: e.ORCH_AGENT,
      command: e.ORCH_AGENT_CMD,
      demoDelayMs: e.ORCH_DEMO_DELAY_MS,
      timeoutS: e.ORCH_AGENT_TIMEOUT_S,
      maxCostUsd: e.ORCH_AGENT_MAX_COST_USD,
      model: e.ORCH_AGENT_MODEL,
      claude: {
        bin: e.ORCH_CLAUDE_BIN,
        maxTurns: e.ORCH_CLAUDE_MAX_TURNS,
        permissionMode: e.ORCH_CLAUDE_PERMISSION_MODE,
        allowedTools: parseToolList(e.ORCH_CLAUDE_ALLOWED_TOOLS),
      },
      codex: { bin: e.ORCH_CODEX_BIN },
    },
    tracker: { outboxIntervalS: e.ORCH_OUTBOX_INTERVAL_S, reconcileS: e.ORCH_PLANE_RECONCILE_S },
    stop: { enabled: e.ORCH_STOP_STATUS_ENABLED, graceS: e.ORCH_STOP_GRACE_S, pollS: e.ORCH_CANCEL_POLL_S },
    reaper: {
      enabled: e.ORCH_REAPER_ENABLED,
      intervalS: e.ORCH_REAPER_INTERVAL_S,
      deadTicks: e.ORCH_REAPER_DEAD_TICKS,
      maxRunningS: e.ORCH_REAPER_MAX_RUNNING_S,
      finalizeGraceS: e.ORCH_REAPER_FINALIZE_GRACE_S,
      leaseReclaimEnabled: e.ORCH_LEASE_RECLAIM_ENABLED,
      mergeLeaseTtlS: e.ORCH_MERGE_LEASE_TTL_S,
    },
    maxReviewRounds: e.ORCH_MAX_REVIEW_ROUNDS,
    jobMaxAttempts: e.ORCH_JOB_MAX_ATTEMPTS,
    heartbeat: { intervalS: e.ORCH_HEARTBEAT_INTERVAL_S, timeoutS: e.ORCH_HEARTBEAT_TIMEOUT_S },
    workerShutdownS: e.ORCH_WORKER_SHUTDOWN_S,
    retryBackoffBaseS: e.ORCH_RETRY_BACKOFF_BASE_S,
    dispatchPollS: e.ORCH_DISPATCH_POLL_S,
    logLevel: e.ORCH_LOG_LEVEL,
    plane:
      e.PLANE_BASE_URL && e.PLANE_API_KEY && e.PLANE_WORKSPACE_SLUG
        ? {
            baseUrl: e.PLANE_BASE_URL,
            apiKey: e.PLANE_API_KEY,
            workspaceSlug: e.PLANE_WORKSPACE_SLUG,
            webhookSecret: e.PLANE_WEBHOOK_SECRET,
            botUserId: e.PLANE_BOT_USER_ID,
          }
        : null,
    planeWebhookSecret: e.PLANE_WEBHOOK_SECRET,
    planeStates: {
      start: e.PLANE_STATE_START ?? 'To Analyse',
      stop: e.PLANE_STATE_STOP ?? 'STOP',
      in_progress: e.PLANE_STATE_IN_PROGRESS ?? 'In Progress',
      in_review: e.PLANE_STATE_IN_REVIEW ?? 'In Review',
      done: e.PLANE_STATE_DONE ?? 'Done',
      cancelled: e.PLANE_STATE_CANCELLED ?? 'Cancelled',
      blocked: e.PLANE_STATE_BLOCKED ?? 'Blocked',
    },
    gitea: e.GITEA_BASE_URL && e.GITEA_TOKEN ? { baseUrl: e.GITEA_BASE_URL, token: e.GITEA_TOKEN } : null,
  };
}

/** `a, b,c` → ['a','b','c']; `none` → [] (no flag); unset → undefined (the adapter's default). */
function parseToolList(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  if (v.trim().toLowerCase() === 'none') return [];
  return v.split(',').map((t) => t.trim()).filter(Boolean);
}

/** The variables an agent process must never inherit (orch's own secrets). */
export const SECRET_ENV_VARS = [
  'DATABASE_URL',
  'ORCH_API_TOKEN',
  'PLANE_API_KEY',
  'PLANE_WEBHOOK_SECRET',
  'GITEA_TOKEN',
  'TEST_DATABASE_URL',
] as const;

/** The process environment minus orch's secrets: the base of every child process's env. */
export function childBaseEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && !(SECRET_ENV_VARS as readonly string[]).includes(k)) out[k] = v;
  }
  return out;
}
