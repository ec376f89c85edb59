/**
 * `orch psql` and `orch db url`: the database orch uses — DATABASE_URL, else the embedded
 * Postgres `orch up` started for this ORCH_HOME — for the operator's psql recipes. `orch psql`
 * runs the system's psql on it (the password goes in PGPASSWORD, not on the command line), passes
 * its arguments through, and exits with psql's code.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import { childBaseEnv } from '@orch/shared/runtime/config';
import { checkDatabase, CliError, config, databaseUrl, splitPassword } from '../context.ts';
import type { CommandSpec, GroupSpec } from '../registry.ts';

/** Exit code of a command that is not installed, as shells use it. */
const NOT_INSTALLED = 127;

export const psqlCommand: CommandSpec = {
  summary: "psql on orch's database (DATABASE_URL, or the embedded one of `orch up`)",
  details:
    'Every argument goes to psql: `orch psql -c "table jobs"`, `orch psql -f report.sql`.\n' +
    'psql itself must be installed (Debian/Ubuntu: apt-get install postgresql-client).\n' +
    '`orch psql -- --help` shows psql\'s own help.',
  usage: ['psql [psql arguments ...]'],
  passThrough: true,
  run: async ({ positionals }) => {
    const cfg = config();
    const url = await databaseUrl(cfg);
    await checkDatabase(url, { requireMigrated: false, hint: cfg.databaseUrl ? undefined : 'is `orch up` running? Its embedded Postgres runs while it does' });
    const { dsn, password } = splitPassword(url);
    const child = spawn('psql', ['-d', dsn, ...positionals], {
      stdio: 'inherit',
      env: { ...childBaseEnv(), ...(password !== null ? { PGPASSWORD: password } : {}) },
    });
    // psql reads the terminal's Ctrl-C and Ctrl-\ itself (cancel a query); orch waits for it
    const ignore = () => {};
    const forward = (s: NodeJS.Signals) => child.kill(s);
    process.on('SIGINT', ignore);
    process.on('SIGQUIT', ignore);
    process.on('SIGTERM', forward);
    process.on('SIGHUP', forward);
    try {
      return await new Promise<number>((resolve, reject) => {
        child.once('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') {
            reject(new CliError('psql is not installed (or not on PATH): install the PostgreSQL client (Debian/Ubuntu: apt-get install postgresql-client), or point any client at `orch db url`', NOT_INSTALLED));
          } else reject(err);
        });
        child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0)));
      });
    } finally {
      process.off('SIGINT', ignore);
      process.off('SIGQUIT', ignore);
      process.off('SIGTERM', forward);
      process.off('SIGHUP', forward);
    }
  },
};

export const dbCommand: GroupSpec = {
  summary: "orch's database: url",
  subcommands: {
    url: {
      summary: 'print the URL of the database orch uses (DATABASE_URL, or the embedded one), password included',
      usage: ['db url'],
      run: async () => {
        process.stdout.write(`${await databaseUrl(config())}\n`);
        return 0;
      },
    },
  },
};
