/**
 * The CLI's commands as data: each command (or group of subcommands) is one spec, from which
 * `orch --help`, `orch <command> --help` and the dispatch are built. Options are parsed with
 * `node:util` parseArgs (strict: an unknown option is a usage error, exit 2).
 */
import { parseArgs, type ParseArgsOptionDescriptor } from 'node:util';
import { OrchError } from '@orch/shared/runtime/errors';
import { CliError } from './context.ts';

export interface OptionSpec extends ParseArgsOptionDescriptor {
  /** one line for `--help` */
  help: string;
}

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export interface CommandSpec {
  /** one line, shown first by `--help` and in `orch --help` */
  summary: string;
  /** more lines after the summary (optional) */
  details?: string;
  /** the usage line(s) after `usage: orch ` */
  usage: string[];
  options?: Record<string, OptionSpec>;
  /** the arguments go to the command unparsed (after an optional `--`); only a first `--help` is orch's */
  passThrough?: boolean;
  run(args: Parsed): Promise<number>;
}

export interface GroupSpec {
  summary: string;
  subcommands: Record<string, CommandSpec>;
}

export type Spec = CommandSpec | GroupSpec;

export type Command = (argv: string[]) => Promise<number>;

const isGroup = (s: Spec): s is GroupSpec => 'subcommands' in s;

function optionLines(options: Record<string, OptionSpec>): string {
  const rows = Object.entries(options).map(([k, o]) => [`--${k}${o.type === 'string' ? ' <value>' : ''}`, o.help] as const);
  rows.push(['--help', 'show this help']);
  const w = Math.max(...rows.map(([f]) => f.length));
  return `\noptions:\n${rows.map(([f, h]) => `  ${f.padEnd(w)}  ${h}`.trimEnd()).join('\n')}\n`;
}

function helpOf(name: string, spec: Spec): string {
  if (isGroup(spec)) {
    const subs = Object.entries(spec.subcommands);
    const usage = subs.flatMap(([, s]) => s.usage).map((u, i) => `${i === 0 ? 'usage: ' : '       '}orch ${u}`);
    const options: Record<string, OptionSpec> = Object.assign({}, ...subs.map(([, s]) => s.options ?? {}));
    const lines = subs.map(([sub, s]) => `  ${sub.padEnd(8)}  ${s.summary}`);
    return `${spec.summary}\n\n${usage.join('\n')}\n\nsubcommands:\n${lines.join('\n')}\n${optionLines(options)}`;
  }
  const usage = spec.usage.map((u, i) => `${i === 0 ? 'usage: ' : '       '}orch ${u}`).join('\n');
  return `${spec.summary}\n${spec.details ? `${spec.details}\n` : ''}\n${usage}\n${optionLines(spec.options ?? {})}`;
}

function usageLine(name: string, spec: Spec): string {
  return isGroup(spec) ? Object.values(spec.subcommands).flatMap((s) => s.usage).map((u) => `orch ${u}`).join('\n       ') : `orch ${spec.usage[0]}`;
}

async function runSpec(name: string, spec: CommandSpec, argv: string[], helpName = name, helpSpec: Spec = spec): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(spec, argv);
  } catch (err) {
    process.stderr.write(`orch: ${(err as Error).message}\n\nusage: ${usageLine(name, spec)}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(helpOf(helpName, helpSpec));
    return 0;
  }
  try {
    return await spec.run(parsed);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`orch: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof OrchError) {
      process.stderr.write(`orch: ${err.message}\n`);
      return err.code === 'not_found' ? 3 : 1;
    }
    throw err;
  }
}

function parse(spec: CommandSpec, argv: string[]): Parsed {
  if (spec.passThrough && argv[0] !== '--help' && argv[0] !== '-h') return { values: {}, positionals: argv[0] === '--' ? argv.slice(1) : argv };
  return parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, ...stripHelp(spec.options ?? {}) }, allowPositionals: true, strict: true }) as Parsed;
}

function stripHelp(options: Record<string, OptionSpec>): Record<string, ParseArgsOptionDescriptor> {
  return Object.fromEntries(Object.entries(options).map(([k, { help: _help, ...o }]) => [k, o]));
}

/** A spec as a runnable command: `argv` is what follows the command's name. */
function toCommand(name: string, spec: Spec): Command {
  if (!isGroup(spec)) return (argv) => runSpec(name, spec, argv);
  return async (argv) => {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      process.stdout.write(helpOf(name, spec));
      return sub === undefined ? 2 : 0;
    }
    const s = spec.subcommands[sub];
    if (!s) {
      process.stderr.write(`orch: unknown ${name} subcommand "${sub}"\n\n${helpOf(name, spec)}`);
      return 2;
    }
    return runSpec(`${name} ${sub}`, s, rest, name, spec);
  };
}

export interface Registry {
  commands: Record<string, Command>;
  usage(): string;
}

export function buildRegistry(groups: Array<{ title: string; specs: Record<string, Spec> }>): Registry {
  const commands: Record<string, Command> = {};
  for (const g of groups) for (const [name, spec] of Object.entries(g.specs)) commands[name] = toCommand(name, spec);
  const w = Math.max(...groups.flatMap((g) => Object.keys(g.specs).map((n) => n.length)));
  const usage = () =>
    `orch — an orchestrator for AI coding agents, coordinated through Postgres\n\nusage: orch <command> [options]   (orch <command> --help for details)\n` +
    groups.map((g) => `\n${g.title}:\n${Object.entries(g.specs).map(([n, s]) => `  ${n.padEnd(w)}  ${s.summary}`).join('\n')}\n`).join('');
  return { commands, usage };
}

/** `--json` data or a text rendering. */
export function print(json: boolean, data: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : text());
}

/** The one vocabulary of options shared by commands. */
export const JSON_OPTION: OptionSpec = { type: 'boolean', help: 'print the data as JSON instead of text' };
export const PORT_OPTION: OptionSpec = { type: 'string', help: 'listen on this port (default: ORCH_API_PORT)' };
