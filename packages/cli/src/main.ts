/**
 * `orch` — one binary, subcommands. Process roles (api, worker, reaper, up) are thin shells:
 * parse config, build dependencies, start loops, handle SIGTERM.
 */
import { commands, usage } from './commands/index.ts';

const [name, ...rest] = process.argv.slice(2);

async function main(): Promise<number> {
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 1;
  }
  if (name === '--version') {
    process.stdout.write('orch 0.1.0\n');
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`orch: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return cmd(rest);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // a library may reject with a string, or with nothing at all
    process.stderr.write(`orch: ${err instanceof Error ? err.message : String(err ?? 'failed')}\n`);
    process.exitCode = 1;
  },
);
