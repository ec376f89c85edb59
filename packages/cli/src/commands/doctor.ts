/**
 * `orch doctor`: what this host gives orch's processes — the sandbox and limits every agent, test
 * and deploy would run with here (the same detection `orch worker` makes at start), and the tools
 * orch calls. Needs no database. Exit 1 when the worker would refuse to start here.
 */
import { execFile } from 'node:child_process';
import { describeLimits } from '@orch/shared/host/limits';
import { detectIsolation, isolationView, probeBwrap, SandboxUnavailableError } from '@orch/shared/host/isolation';
import { stepEnv } from '@orch/shared/runtime/config';
import { config } from '../context.ts';
import { JSON_OPTION, print, type CommandSpec } from '../registry.ts';

function versionOf(cmd: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 5000 }, (err, stdout) => resolve(err ? null : String(stdout).trim().split('\n')[0]!));
  });
}

export const doctorCommand: CommandSpec = {
  summary: "this host's isolation (sandbox, network, limits) and tools, as a worker here would use them",
  details: 'Runs bubblewrap for real with the namespaces a job uses. Exits 1 when `orch worker` would refuse to start (ORCH_AGENT_SANDBOX=bwrap without a working sandbox).',
  usage: ['doctor [--json]'],
  options: { json: JSON_OPTION },
  run: async ({ values: v }) => {
    const cfg = config();
    const pathVar = stepEnv([]).PATH;
    const probe = await probeBwrap(pathVar);
    let refused: string | null = null;
    let view = null;
    try {
      view = isolationView(await detectIsolation(cfg, pathVar, probe));
    } catch (err) {
      if (!(err instanceof SandboxUnavailableError)) throw err;
      refused = err.message;
    }
    const tools = { node: process.version, git: await versionOf('git', ['--version']), bwrap: probe.version, psql: await versionOf('psql', ['--version']) };
    const report = { mode: cfg.agent.sandbox.mode, isolation: view, refused, bwrap: { works: probe.ok, reason: probe.reason }, tools };
    print(Boolean(v.json), report, () => {
      let out = `sandbox   ORCH_AGENT_SANDBOX=${cfg.agent.sandbox.mode}: `;
      out += refused ? `REFUSED — ${refused}\n` : `${view!.sandbox === 'bwrap' ? 'bubblewrap' : 'none (agents run unsandboxed)'}\n`;
      if (view?.warning) out += `WARNING   ${view.warning}\n`;
      out += `network   ${cfg.agent.sandbox.network}${view?.sandbox === 'bwrap' && cfg.agent.sandbox.network === 'off' ? ' (sandboxed steps get no network)' : ''}\n`;
      out += `limits    ${view?.limits ?? describeLimits({ how: 'none', maxProcs: cfg.agent.sandbox.maxProcs, maxMemoryMb: cfg.agent.sandbox.maxMemoryMb, parents: [] })}\n`;
      out += `bwrap     ${probe.ok ? `works (${probe.version})` : probe.reason}\n`;
      for (const [k, val] of Object.entries(tools)) if (k !== 'bwrap') out += `${k.padEnd(9)} ${val ?? 'not found'}\n`;
      return out;
    });
    return refused ? 1 : 0;
  },
};
