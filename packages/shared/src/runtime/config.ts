/**
 * The whole environment, declared once and validated once at start. Each setting is one
 * declaration below — variable, type, default, a line of doc, secret or not (setting.ts) — and
 * its place in the tree is its place in the typed `Config`. Validation, `orch config` and the
 * reference (docs/configuration.md, .env.example) are derived from these declarations. Nothing
 * else in orch reads `process.env`. A bad value stops the process with a message naming the
 * variable.
 */
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_PRICE_TABLE, describePrices, parsePrices, priceTable } from '../agents/prices.ts';
import {
  choice,
  computed,
  dirPath,
  flag,
  httpUrl,
  list,
  number,
  optionalNumber,
  parseDeclarations,
  parsed,
  settingsOf,
  text,
  together,
  type ConfigOf,
  type Declaration,
  type SettingEntry,
} from './setting.ts';

/** Reference sections: every setting's env name → the section it is documented in. */
const SECTIONS = new Map<string, string>();
function section<T extends Record<string, Declaration>>(title: string, decls: T): T {
  for (const e of settingsOf(decls)) SECTIONS.set(e.setting.env, title);
  return decls;
}

const AGENT_KINDS = ['claude', 'codex', 'command', 'demo'] as const;
const SANDBOX_MODES = ['auto', 'bwrap', 'none'] as const;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const SETTINGS = {
  ...section('Database and home', {
    databaseUrl: text('DATABASE_URL', {
      doc: 'Postgres URL. Unset: `orch up` starts an embedded Postgres in $ORCH_HOME/pgdata and the other commands use it.',
      secret: true,
      pattern: /^postgres(ql)?:\/\//,
      expected: 'a postgres:// URL',
    }),
    home: dirPath('ORCH_HOME', { default: '.orch', doc: 'Where `orch up` keeps its data: embedded Postgres, local repos, worktrees.' }),
    embeddedPgPort: number('ORCH_EMBEDDED_PG_PORT', { default: 54329, int: true, min: 1, max: 65535, doc: 'Port of the embedded Postgres started by `orch up` (127.0.0.1 only).' }),
  }),
  ...section('API', {
    api: {
      port: number('ORCH_API_PORT', { default: 8080, int: true, min: 0, max: 65535, doc: 'Port of `orch api` (and `orch up`).' }),
      host: text('ORCH_API_HOST', { default: '127.0.0.1', doc: 'Address the API listens on.' }),
      token: text('ORCH_API_TOKEN', {
        doc: 'When set, every mutating route except the Plane webhook needs `Authorization: Bearer <token>`; the dashboard asks for it once per browser session.',
        secret: true,
      }),
      bodyLimitBytes: number('ORCH_API_BODY_LIMIT_BYTES', { default: 1_048_576, int: true, min: 1024, doc: 'Largest request body accepted (bytes); larger is a 413.' }),
      publicUrl: httpUrl('ORCH_PUBLIC_URL', {
        doc: "The dashboard's address as people reach it (e.g. https://orch.example.com): Gitea commit statuses and PR comments link to the task there.",
      }),
    },
  }),
  ...section('Workers', {
    maxConcurrency: number('ORCH_MAX_CONCURRENCY', { default: 4, int: true, min: 1, doc: 'Running jobs fleet-wide (every worker must use the same value). Projects have their own cap too.' }),
    workerSlots: number('ORCH_WORKER_SLOTS', { default: 4, int: true, min: 1, doc: 'Jobs one worker process runs at once.' }),
    hostId: computed('ORCH_HOST_ID', { compute: () => os.hostname(), shownDefault: 'the OS hostname', doc: "This host's identity (same host = same id)." }),
    worktreeRoot: dirPath('ORCH_WORKTREE_ROOT', {
      default: (r) => path.join(r.get('ORCH_HOME') as string, 'worktrees'),
      shownDefault: '$ORCH_HOME/worktrees',
      doc: "Where this host keeps mirrors, tasks' working trees and per-job run dirs.",
    }),
    heartbeat: {
      intervalS: number('ORCH_HEARTBEAT_INTERVAL_S', { default: 2, min: 0.05, doc: 'Workers heartbeat this often (seconds).' }),
      timeoutS: number('ORCH_HEARTBEAT_TIMEOUT_S', { default: 10, min: 0.1, doc: 'A heartbeat older than this is stale (must be greater than the interval).' }),
    },
    workerShutdownS: number('ORCH_WORKER_SHUTDOWN_S', { default: 30, min: 0, doc: 'On SIGTERM: let running jobs finish this long, then stop their agents and requeue their jobs.' }),
    dispatchPollS: number('ORCH_DISPATCH_POLL_S', { default: 2, min: 0.05, doc: 'Idle workers look for claimable work this often besides NOTIFY (a backstop).' }),
    affinityWaitMs: number('ORCH_AFFINITY_WAIT_MS', {
      default: 50,
      int: true,
      min: 0,
      doc: "A task's next stage (or retry) is left to the host that ran the previous one, which holds its worktree, for this long after it is due (ms); then any host may claim it. 0 = no preference.",
    }),
    jobMaxAttempts: number('ORCH_JOB_MAX_ATTEMPTS', { default: 3, int: true, min: 1, doc: 'Attempts per stage before the task is blocked.' }),
    retryBackoffBaseS: number('ORCH_RETRY_BACKOFF_BASE_S', { default: 10, min: 0, doc: 'A retry waits base · 2^(attempt−1) seconds, at most 300.' }),
    maxReviewRounds: number('ORCH_MAX_REVIEW_ROUNDS', { default: 3, int: true, min: 0, doc: 'review → implementation send-backs before the task is blocked (review_rounds_exhausted).' }),
  }),
  ...section('Agents', {
    agent: {
      kind: choice('ORCH_AGENT', AGENT_KINDS, { default: 'demo', doc: 'The agent every stage runs.' }),
      command: text('ORCH_AGENT_CMD', { doc: 'With ORCH_AGENT=command: the command line, run through `sh -c` in the worktree.' }),
      demoDelayMs: number('ORCH_DEMO_DELAY_MS', { default: 300, int: true, min: 0, doc: 'Delay of the built-in demo agent (ms).' }),
      timeoutS: number('ORCH_AGENT_TIMEOUT_S', { default: 3600, min: 1, doc: 'Per stage attempt: the agent is stopped (SIGTERM, grace, SIGKILL) and the job fails.' }),
      maxCostUsd: number('ORCH_AGENT_MAX_COST_USD', {
        default: 0,
        min: 0,
        doc: "Per stage attempt, USD; 0 = no limit. claude also gets it as --max-budget-usd; orch stops the agent when the cost it reports, or until then the running estimate from its token usage and ORCH_AGENT_PRICES, goes over.",
      }),
      maxTokens: number('ORCH_AGENT_MAX_TOKENS', {
        default: 0,
        int: true,
        min: 0,
        doc: 'Per stage attempt: input tokens (cached ones included) plus output tokens, as the agent streams them (codex: estimated from its text until its turn ends); over it the agent is stopped. 0 = no limit.',
      }),
      stallS: number('ORCH_AGENT_STALL_S', {
        default: 300,
        min: 0,
        doc: 'An agent that prints no progress (message, tool call or result, item) for this long is stopped as `stalled` and retried after a backoff. Retry and reconnect notices are not progress, and a tool call that prints nothing (a long test run) is none either. 0 = off.',
      }),
      resume: flag('ORCH_AGENT_RESUME', {
        default: false,
        doc: "A retry or review round continues the CLI session of the stage's previous run on this host (claude --resume, codex exec resume); a session that is gone starts fresh.",
      }),
      prices: parsed('ORCH_AGENT_PRICES', {
        type: 'model=in/out[/cache_read[/cache_write]],…',
        shownDefault: 'the built-in table',
        fallback: DEFAULT_PRICE_TABLE,
        parse: (raw) => priceTable(parsePrices(raw)),
        show: (t) => describePrices(t),
        doc: 'USD per million tokens for the running cost estimate, in front of the built-in table (docs/agents.md); `*` wildcards, first match wins, `*=in/out` replaces the fallback price (15/75).',
      }),
      home: dirPath('ORCH_AGENT_HOME', {
        default: (r) => path.join(r.get('ORCH_WORKTREE_ROOT') as string, 'agent-home'),
        shownDefault: '$ORCH_WORKTREE_ROOT/agent-home',
        doc: "This host's state of claude and codex, one directory each (CLAUDE_CONFIG_DIR, CODEX_HOME): logins and sessions, kept across jobs. Log the CLI in there.",
      }),
      model: text('ORCH_AGENT_MODEL', { doc: 'Passed as --model to claude and codex when set.' }),
      claude: {
        bin: text('ORCH_CLAUDE_BIN', { doc: 'The claude executable (default: `claude` on PATH).' }),
        maxTurns: optionalNumber('ORCH_CLAUDE_MAX_TURNS', { int: true, min: 1, doc: '--max-turns for claude (unset: no flag).' }),
        permissionMode: text('ORCH_CLAUDE_PERMISSION_MODE', { doc: '--permission-mode for claude (default: acceptEdits).' }),
        allowedTools: list('ORCH_CLAUDE_ALLOWED_TOOLS', {
          shownDefault: 'Bash,Read,Edit,Write,Glob,Grep',
          doc: 'Comma list for claude --allowedTools; `none` passes no flag.',
        }),
      },
      codex: {
        bin: text('ORCH_CODEX_BIN', { doc: 'The codex executable (default: `codex` on PATH).' }),
      },
      sandbox: {
        mode: choice('ORCH_AGENT_SANDBOX', SANDBOX_MODES, {
          default: 'auto',
          doc: "Isolation of every agent, test and deploy command (docs/adr/0012): `bwrap` runs each in a bubblewrap sandbox and refuses to start the worker without a working one; `auto` does so when bwrap works on the host and otherwise runs them unsandboxed with a warning (start line, GET /queue, `orch status`, dashboard); `none` never sandboxes.",
        }),
        network: choice('ORCH_AGENT_NETWORK', ['on', 'off'] as const, {
          default: 'on',
          doc: "`off`: sandboxed steps get no network at all (a loopback of their own; for command agents that need no API). `on` keeps the host's network, its loopback services included.",
        }),
        envAllow: list('ORCH_AGENT_ENV_ALLOW', {
          shownDefault: 'none',
          doc: "Names passed from the worker's environment to agents, tests and deploys, besides PATH, locale, TERM, TZ, the contract's ORCH_ variables and what the CLI needs (ANTHROPIC_API_KEY, OPENAI_API_KEY, …); `NAME_*` matches a prefix. orch's secrets are never passed.",
        }),
        readOnly: list('ORCH_AGENT_SANDBOX_READ_ONLY', {
          shownDefault: 'none',
          doc: "Host paths the sandbox shows read-only although they are hidden by default (under the worker's HOME or /tmp), e.g. a toolchain. PATH's directories and orch's installation are shown already.",
        }),
        writable: list('ORCH_AGENT_SANDBOX_WRITABLE', {
          shownDefault: 'none',
          doc: "Host paths every sandboxed step may write, shared between jobs (a package cache). Never list anything of orch's (ORCH_HOME, the worktree root).",
        }),
        maxProcs: number('ORCH_AGENT_MAX_PROCS', {
          default: 1024,
          int: true,
          min: 0,
          doc: 'Processes one step may have at once (fork bombs), through a cgroup of its own where the host allows, else prlimit. 0 = no limit.',
        }),
        maxMemoryMb: number('ORCH_AGENT_MAX_MEMORY_MB', {
          default: 8192,
          int: true,
          min: 0,
          doc: "Memory of one step's processes together (cgroup), or of each one (prlimit's RLIMIT_DATA). 0 = no limit.",
        }),
      },
    },
  }),
  ...section('STOP', {
    stop: {
      enabled: flag('ORCH_STOP_STATUS_ENABLED', { default: true, doc: 'false: the Plane STOP status is ignored, POST /tasks/:id/stop answers 409, `orch stop` fails.' }),
      graceS: number('ORCH_STOP_GRACE_S', { default: 5, min: 0, doc: "SIGTERM → this grace → SIGKILL, for the agent's whole process group." }),
      pollS: number('ORCH_CANCEL_POLL_S', { default: 1, min: 0.05, doc: 'Workers poll for cancels this often besides LISTEN.' }),
    },
  }),
  ...section('Reaper', {
    reaper: {
      enabled: flag('ORCH_REAPER_ENABLED', { default: true, doc: 'false: `orch reaper` does nothing.' }),
      intervalS: number('ORCH_REAPER_INTERVAL_S', { default: 5, min: 0.05, doc: 'Seconds between reaper ticks.' }),
      deadTicks: number('ORCH_REAPER_DEAD_TICKS', { default: 2, int: true, min: 1, doc: 'Tier 1: consecutive ticks with a dead owner before its job is failed (and requeued).' }),
      maxRunningS: number('ORCH_REAPER_MAX_RUNNING_S', { default: 7200, min: 1, doc: 'Tier 3: a job running longer than this is killed and failed.' }),
      finalizeGraceS: number('ORCH_REAPER_FINALIZE_GRACE_S', { default: 300, min: 0, doc: 'Tier 2: a job whose agent exit was recorded this long ago is finalized by the reaper.' }),
      leaseReclaimEnabled: flag('ORCH_LEASE_RECLAIM_ENABLED', { default: true, doc: 'Reclaim merge leases whose holder is dead or older than the TTL.' }),
      mergeLeaseTtlS: number('ORCH_MERGE_LEASE_TTL_S', { default: 900, min: 1, doc: "A merge lease older than this is reclaimed (its holder's backend terminated)." }),
    },
  }),
  ...section('Logs', {
    logLevel: choice('ORCH_LOG_LEVEL', LOG_LEVELS, { default: 'info', doc: 'pino level (pretty on a TTY, JSON otherwise).' }),
  }),
  ...section('Plane', {
    plane: {
      api: together({
        baseUrl: httpUrl('PLANE_BASE_URL', { doc: 'Plane, e.g. https://plane.example.com (no /api/v1). Set the three PLANE_ API settings together, or none.' }),
        apiKey: text('PLANE_API_KEY', { doc: "The API key orch acts with (Plane's X-API-Key).", secret: true }),
        workspaceSlug: text('PLANE_WORKSPACE_SLUG', { doc: "The workspace's slug." }),
      }),
      webhookSecret: text('PLANE_WEBHOOK_SECRET', { doc: 'Required for POST /webhooks/plane (503 without it).', secret: true }),
      botUserId: text('PLANE_BOT_USER_ID', { doc: 'The Plane user orch acts as: webhooks caused by it (echoes) are ignored.' }),
      states: {
        start: text('PLANE_STATE_START', { default: 'To Analyse', doc: 'State name that starts a task (matched case-insensitively).' }),
        stop: text('PLANE_STATE_STOP', { default: 'STOP', doc: 'State name that cancels a task.' }),
        in_progress: text('PLANE_STATE_IN_PROGRESS', { default: 'In Progress', doc: 'State orch moves a picked-up issue to.' }),
        in_review: text('PLANE_STATE_IN_REVIEW', { default: 'In Review', doc: 'State orch moves an issue to when its review starts.' }),
        done: text('PLANE_STATE_DONE', { default: 'Done', doc: 'State orch moves an issue to when its task is done.' }),
        cancelled: text('PLANE_STATE_CANCELLED', { default: 'Cancelled', doc: 'State orch moves an issue to when its task is cancelled.' }),
        blocked: text('PLANE_STATE_BLOCKED', { default: 'Blocked', doc: 'State orch moves an issue to when its task is blocked.' }),
      },
      rate: {
        limit: number('PLANE_RATE_LIMIT_PER_MIN', {
          default: 60,
          int: true,
          min: 1,
          doc: "Requests a minute Plane allows the API key (Plane's API_KEY_RATE_LIMIT; 300 for a service token). The whole fleet shares it.",
        }),
        outboxReserve: number('PLANE_OUTBOX_RESERVE', {
          default: 20,
          int: true,
          min: 0,
          doc: 'Of those, how many only the outbox (state changes, comments) may spend: the reconciliation poll leaves them.',
        }),
      },
    },
    tracker: {
      outboxIntervalS: number('ORCH_OUTBOX_INTERVAL_S', { default: 2, min: 0.05, doc: 'Deliver queued Plane and Gitea calls (state changes, comments, commit statuses) this often; run by `orch reaper` / `up`.' }),
      reconcileS: number('ORCH_PLANE_RECONCILE_S', { default: 60, min: 0, doc: 'Poll Plane for issues in the start/stop states that orch missed, once per interval for the whole fleet; 0 = off.' }),
    },
  }),
  ...section('Gitea', {
    gitea: together({
      baseUrl: httpUrl('GITEA_BASE_URL', { doc: 'Gitea, for projects added with --gitea owner/repo. Set both GITEA_ settings, or neither.' }),
      token: text('GITEA_TOKEN', { doc: 'A Gitea API token of the user orch acts as.', secret: true }),
    }),
  }),
} satisfies Record<string, Declaration>;

export type Config = ConfigOf<typeof SETTINGS>;

/** Rules between settings, after each one parsed on its own. */
const CHECKS: Array<(c: Config) => string | null> = [
  (c) => (c.agent.kind === 'command' && !c.agent.command ? 'ORCH_AGENT_CMD: required when ORCH_AGENT=command' : null),
  (c) => (c.heartbeat.timeoutS <= c.heartbeat.intervalS ? 'ORCH_HEARTBEAT_TIMEOUT_S: must be greater than ORCH_HEARTBEAT_INTERVAL_S' : null),
  (c) => (c.plane.rate.outboxReserve >= c.plane.rate.limit ? 'PLANE_OUTBOX_RESERVE: must be less than PLANE_RATE_LIMIT_PER_MIN (the poll needs some of it)' : null),
];

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
  const { value, issues } = parseDeclarations(SETTINGS, env);
  if (issues.length) throw new ConfigError(issues);
  const more = CHECKS.map((check) => check(value)).filter((i): i is string => i !== null);
  if (more.length) throw new ConfigError(more);
  return value;
}

/** Every declared setting, in declaration order, with its reference section. */
export function settingEntries(): Array<SettingEntry & { section: string }> {
  return settingsOf(SETTINGS).map((e) => ({ ...e, section: SECTIONS.get(e.setting.env) ?? 'Other' }));
}

export interface EffectiveSetting {
  env: string;
  /** the effective value as text; secrets are masked */
  value: string;
  source: 'env' | 'default';
  secret: boolean;
  section: string;
}

/** What `orch config` prints: every setting's effective value and where it came from. */
export function effectiveSettings(config: Config, env: Record<string, string | undefined> = process.env): EffectiveSetting[] {
  return settingEntries().map(({ path: p, setting, section }) => {
    const fromEnv = env[setting.env] !== undefined && env[setting.env]!.trim() !== '';
    const v = p.split('.').reduce<unknown>((o, k) => (o === null || o === undefined ? undefined : (o as Record<string, unknown>)[k]), config);
    const shown = v === undefined || v === null ? '' : setting.show ? setting.show(v) : Array.isArray(v) ? (v.length ? v.join(',') : 'none') : String(v);
    return { env: setting.env, value: setting.secret && shown ? '********' : shown, source: fromEnv ? 'env' : 'default', secret: setting.secret, section };
  });
}

/** docs/configuration.md, generated from the declarations (`orch config --reference`). */
export function settingsReference(): string {
  const rows = settingEntries();
  let out =
    '# Configuration reference\n\n' +
    '<!-- generated by `./orch config --reference > docs/configuration.md`; a test fails when it is stale -->\n\n' +
    'Every setting is an environment variable, all optional. A bad value stops the process at start with a\n' +
    'message naming the variable. Booleans: `true/1/yes/on` or `false/0/no/off`. Secrets are never printed\n' +
    '(`orch config` masks them) and never reach an agent.\n';
  for (const title of [...new Set(rows.map((r) => r.section))]) {
    out += `\n## ${title}\n\n| variable | type | default | meaning |\n|---|---|---|---|\n`;
    for (const r of rows.filter((x) => x.section === title)) {
      const s = r.setting;
      const def = s.shownDefault === '' ? '—' : `\`${s.shownDefault}\``;
      out += `| \`${s.env}\`${s.secret ? ' (secret)' : ''} | ${s.type} | ${def} | ${s.doc.replace(/\|/g, '\\|')} |\n`;
    }
  }
  return out;
}

/** .env.example, generated from the declarations (`orch config --env-example`). */
export function envExample(): string {
  const rows = settingEntries();
  let out =
    '# orch settings. Every variable is optional; the value shown is the default.\n' +
    '# Generated by `./orch config --env-example > .env.example`; docs/configuration.md has the same, as a table.\n' +
    '# A bad value stops the process at start with a message naming the variable.\n' +
    '# Booleans: true/1/yes/on or false/0/no/off.\n';
  for (const title of [...new Set(rows.map((r) => r.section))]) {
    out += `\n# --- ${title} ${'-'.repeat(Math.max(3, 90 - title.length))}\n`;
    for (const r of rows.filter((x) => x.section === title)) {
      const s = r.setting;
      out += `# ${s.doc}${s.type !== 'string' && s.type !== 'path' ? ` (${s.type})` : ''}\n`;
      const def = s.shownDefault.includes('$') || s.shownDefault.includes(' ') ? '' : s.shownDefault;
      out += `${s.env}=${def}\n`;
    }
  }
  out +=
    '\n# --- runtime (read by the ./orch launcher from its environment, not by orch) -------------------\n' +
    '# Node flags for orch\'s processes. The default bounds V8\'s young generation so that RSS stays\n' +
    '# flat; set it empty for Node\'s defaults.\n' +
    'ORCH_NODE_FLAGS=--max-semi-space-size=16\n';
  return out;
}
/** The variables an agent process must never inherit: every secret setting, and the test suite's database. */
const SECRET_ENV_VARS: readonly string[] = [...settingEntries().filter((e) => e.setting.secret).map((e) => e.setting.env), 'TEST_DATABASE_URL'];

/** What every step process gets from the worker's environment, whatever it is. */
const STEP_ENV_BASE = ['PATH', 'LANG', 'LANGUAGE', 'TERM', 'TZ', 'COLORTERM', 'NO_COLOR', 'LC_*'];

/**
 * The environment an agent, test or deploy process starts from: an allowlist (never a
 * denylist) of the worker's environment — PATH, locale, TERM, TZ, the names the agent's CLI needs
 * (`passEnv`), and ORCH_AGENT_ENV_ALLOW (`NAME_*` is a prefix) — and never one of orch's secrets,
 * whatever is allowed. HOME, TMPDIR and the contract's ORCH_ variables are set by the step.
 */
export function stepEnv(allow: readonly string[], env: Record<string, string | undefined> = process.env): Record<string, string> {
  const patterns = [...STEP_ENV_BASE, ...allow];
  const allowed = (k: string) => patterns.some((p) => (p.endsWith('*') ? k.startsWith(p.slice(0, -1)) : k === p));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && allowed(k) && !(SECRET_ENV_VARS as readonly string[]).includes(k)) out[k] = v;
  }
  return out;
}

/** The process environment minus orch's secrets: the base of the child processes orch runs for itself (psql). */
export function childBaseEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && !(SECRET_ENV_VARS as readonly string[]).includes(k)) out[k] = v;
  }
  return out;
}
