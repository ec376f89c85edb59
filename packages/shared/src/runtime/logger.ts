/** Structured logs (pino). Library code logs through a child logger carrying task/job ids. */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(
  opts: { level?: string; name?: string; pretty?: boolean; destination?: pino.DestinationStream } = {},
): Logger {
  const pretty = opts.destination ? false : (opts.pretty ?? Boolean(process.stderr.isTTY));
  return pino(
    {
      level: opts.level ?? 'info',
      name: opts.name,
      base: { pid: process.pid },
      redact: { paths: ['token', 'apiKey', 'secret', 'password', '*.token', '*.apiKey', '*.secret', 'headers.authorization'], censor: '[redacted]' },
    },
    opts.destination ??
      (pretty
        ? pino.transport({ target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname' } })
        : pino.destination(2)),
  );
}

/** A logger that discards everything (tests, library defaults). */
export const silentLogger: Logger = pino({ level: 'silent' });
