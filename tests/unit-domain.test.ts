import { describe, expect, it } from 'vitest';
import { ConfigError, childBaseEnv, loadConfig } from '@orch/shared/runtime/config';
import {
  STAGE_TRANSITIONS,
  branchName,
  canTransition,
  isTerminal,
  nextStage,
  originalIssueId,
  retryBackoffS,
  tombstoneIssueId,
  type TaskStage,
} from '@orch/shared/stages';
import { decideAfterAbort, decideAfterGate, type AfterGateInput } from '@orch/shared/pipeline/transitions';
import { analysisVerdict, exitVerdict, implementationVerdict, reviewVerdict } from '@orch/shared/gates/verdicts';
import { AFTER_GATE_BASE } from './support/decisions.ts';

describe('stages', () => {
  it('done and cancelled are the only terminal stages, and sinks', () => {
    for (const s of Object.keys(STAGE_TRANSITIONS) as TaskStage[]) {
      expect(isTerminal(s)).toBe(s === 'done' || s === 'cancelled');
      if (isTerminal(s)) expect(STAGE_TRANSITIONS[s]).toEqual([]);
    }
    expect(isTerminal('review')).toBe(false);
  });
  it('no edge leads into cancelled (it is reached only through cancel)', () => {
    for (const targets of Object.values(STAGE_TRANSITIONS)) expect(targets).not.toContain('cancelled');
  });
  it('forward path skips deploy without a deploy command', () => {
    expect(nextStage('merge', { deploy_command: null })).toBe('done');
    expect(nextStage('merge', { deploy_command: './deploy.sh' })).toBe('deploy');
    expect(nextStage('analysis', { deploy_command: null })).toBe('implementation');
    expect(canTransition('review', 'implementation')).toBe(true);
    expect(canTransition('done', 'analysis')).toBe(false);
  });
  it('branch names are orch/<id>-<slug ≤ 40>', () => {
    expect(branchName(12, 'Fix the Login bug!')).toBe('orch/12-fix-the-login-bug');
    expect(branchName(3, 'Élan: ça marche')).toBe('orch/3-elan-ca-marche');
    expect(branchName(7, '!!!')).toBe('orch/7-task');
    const long = branchName(1, 'a'.repeat(30) + ' ' + 'b'.repeat(30));
    expect(long.length).toBeLessThanOrEqual('orch/1-'.length + 40);
    expect(long.endsWith('-')).toBe(false);
  });
  it('tombstones keep the original Plane id recoverable', () => {
    const id = '3f1c0a4e-3c8e-4b8a-9d47-0c6f2a1b9e11';
    expect(tombstoneIssueId(id, 42)).toBe(`${id}~cancelled~42`);
    expect(originalIssueId(tombstoneIssueId(id, 42))).toBe(id);
    expect(originalIssueId(id)).toBe(id);
  });
  it('retry backoff doubles from the base and caps at 5 minutes', () => {
    expect([1, 2, 3, 4].map((a) => retryBackoffS(10, a))).toEqual([10, 20, 40, 80]);
    expect(retryBackoffS(10, 10)).toBe(300);
  });
});

describe('decideAfterGate', () => {
  const base: AfterGateInput = AFTER_GATE_BASE;
  const cases: Array<[string, Partial<AfterGateInput>, ReturnType<typeof decideAfterGate>]> = [
    ['pass advances', {}, { job: 'done', reason: null, then: { kind: 'advance', to: 'implementation', reason: 'gate_passed' } }],
    ['merge pass → done without deploy', { stage: 'merge' }, { job: 'done', reason: null, then: { kind: 'advance', to: 'done', reason: 'merged' } }],
    ['merge pass → deploy with deploy', { stage: 'merge', hasDeployCommand: true }, { job: 'done', reason: null, then: { kind: 'advance', to: 'deploy', reason: 'merged' } }],
    ['a transient failure retries with backoff', { verdict: { verdict: 'fail', reason: 'x', failure: 'transient' } }, { job: 'failed', reason: 'x', then: { kind: 'retry', attempt: 2, delayS: 10 } }],
    ["the agent's own failure retries at once", { verdict: { verdict: 'fail', reason: 'x' } }, { job: 'failed', reason: 'x', then: { kind: 'retry', attempt: 2, delayS: 0 } }],
    ['a configuration failure blocks at once', { verdict: { verdict: 'fail', reason: 'agent_auth', detail: 'not logged in', failure: 'config' } }, { job: 'failed', reason: 'agent_auth', then: { kind: 'block', reason: 'agent_auth — not logged in' } }],
    ['fail on the last attempt blocks', { attempt: 3, verdict: { verdict: 'fail', reason: 'x' } }, { job: 'failed', reason: 'x', then: { kind: 'block', reason: 'attempts_exhausted: x' } }],
    ['review REQUEST_CHANGES sends back, job done', { stage: 'review', verdict: { verdict: 'send_back', reason: 'changes_requested' } }, { job: 'done', reason: 'changes_requested', then: { kind: 'send_back', to: 'implementation', reviewRounds: 1, reason: 'changes_requested' } }],
    ['one send-back too many blocks', { stage: 'review', reviewRounds: 3, verdict: { verdict: 'send_back', reason: 'changes_requested' } }, { job: 'done', reason: 'changes_requested', then: { kind: 'block', reason: 'review_rounds_exhausted' } }],
    ['merge conflict sends back, job failed', { stage: 'merge', verdict: { verdict: 'send_back', reason: 'merge_conflict' } }, { job: 'failed', reason: 'merge_conflict', then: { kind: 'send_back', to: 'implementation', reviewRounds: 1, reason: 'merge_conflict' } }],
    ['terminal task: nothing follows', { taskTerminal: true, verdict: { verdict: 'fail', reason: 'x' } }, { job: 'failed', reason: 'x', then: { kind: 'none' } }],
    ['cancel requested: job cancelled, never requeued', { cancelRequested: true, verdict: { verdict: 'fail', reason: 'x' } }, { job: 'cancelled', reason: 'cancel_requested', then: { kind: 'none' } }],
    ['cancel in critical window: true outcome kept', { stage: 'merge', cancelRequested: true, criticalStepRan: true }, { job: 'done', reason: null, then: { kind: 'none' } }],
  ];
  it.each(cases)('%s', (_name, over, expected) => {
    expect(decideAfterGate({ ...base, ...over })).toEqual(expected);
  });

  it('abort: shutdown requeues with the same attempt; terminal/cancelling tasks never requeue', () => {
    const a = { attempt: 2, maxAttempts: 3, taskTerminal: false, cancelRequested: false, sameAttempt: false, backoffBaseS: 10, reason: 'dead_owner' };
    expect(decideAfterAbort(a)).toEqual({ kind: 'retry', attempt: 3, delayS: 20 });
    expect(decideAfterAbort({ ...a, sameAttempt: true })).toEqual({ kind: 'retry', attempt: 2, delayS: 0 });
    expect(decideAfterAbort({ ...a, attempt: 3 })).toEqual({ kind: 'block', reason: 'attempts_exhausted: dead_owner' });
    expect(decideAfterAbort({ ...a, taskTerminal: true })).toEqual({ kind: 'none' });
    expect(decideAfterAbort({ ...a, cancelRequested: true, sameAttempt: true })).toEqual({ kind: 'none' });
  });
});

describe('gate verdicts', () => {
  it('review reads the first non-empty line', () => {
    expect(reviewVerdict('VERDICT: APPROVE\nfine')).toEqual({ verdict: 'pass' });
    expect(reviewVerdict('\n  VERDICT: REQUEST_CHANGES  \nno')).toMatchObject({ verdict: 'send_back', reason: 'changes_requested' });
    expect(reviewVerdict('looks good\nVERDICT: APPROVE').verdict).toBe('fail');
    expect(reviewVerdict('').verdict).toBe('fail');
    expect(reviewVerdict(undefined).verdict).toBe('fail');
  });
  it('analysis needs a non-empty artefact', () => {
    expect(analysisVerdict('# plan').verdict).toBe('pass');
    expect(analysisVerdict('  \n').verdict).toBe('fail');
  });
  it('implementation needs commits ahead and passing tests when a test command is set', () => {
    expect(implementationVerdict({ commitsAhead: 0, testCommand: null, testExitCode: null }).verdict).toBe('fail');
    expect(implementationVerdict({ commitsAhead: 2, testCommand: null, testExitCode: null }).verdict).toBe('pass');
    expect(implementationVerdict({ commitsAhead: 2, testCommand: 'npm test', testExitCode: null })).toMatchObject({ verdict: 'fail', reason: 'tests_not_run' });
    expect(implementationVerdict({ commitsAhead: 2, testCommand: 'npm test', testExitCode: 1 }).verdict).toBe('fail');
    expect(implementationVerdict({ commitsAhead: 2, testCommand: 'npm test', testExitCode: 0 }).verdict).toBe('pass');
  });
  it('a non-zero exit fails whatever the gate says', () => {
    const run = { agent: 'command', exit_code: 0, signal: null, error: null, failure_code: null, failure_class: null, last_message: null, log_tail: 'oops\n' };
    expect(exitVerdict(run)).toBeNull();
    expect(exitVerdict({ ...run, exit_code: 1 })).toEqual({ verdict: 'fail', reason: 'agent_exit_1', failure: 'agent', detail: 'command exited 1: oops.' });
    expect(exitVerdict({ ...run, exit_code: null })?.verdict).toBe('fail');
  });
});

describe('config', () => {
  it('defaults are the contract defaults', () => {
    const c = loadConfig({});
    expect(c.jobMaxAttempts).toBe(3);
    expect(c.retryBackoffBaseS).toBe(10);
    expect(c.heartbeat).toEqual({ intervalS: 2, timeoutS: 10 });
    expect(c.reaper.finalizeGraceS).toBe(300);
    expect(c.workerShutdownS).toBe(30);
    expect(c.maxReviewRounds).toBe(3);
    expect(c.stop.pollS).toBe(1);
    expect(c.agent.kind).toBe('demo');
  });
  it.each(['false', '0', 'no', 'FALSE', ' off '])('kill switch %j is false', (v) => {
    expect(loadConfig({ ORCH_STOP_STATUS_ENABLED: v, ORCH_REAPER_ENABLED: v }).stop.enabled).toBe(false);
  });
  it('a bad value names the variable', () => {
    const bad = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };
    expect(bad({ ORCH_MAX_CONCURRENCY: 'lots' })).toContain('ORCH_MAX_CONCURRENCY');
    expect(bad({ ORCH_STOP_STATUS_ENABLED: 'maybe' })).toContain('ORCH_STOP_STATUS_ENABLED');
    expect(bad({ ORCH_AGENT: 'gpt' })).toContain('ORCH_AGENT');
    expect(bad({ ORCH_AGENT: 'command' })).toContain('ORCH_AGENT_CMD');
    expect(bad({ DATABASE_URL: 'mysql://x' })).toContain('DATABASE_URL');
    expect(bad({ PLANE_BASE_URL: 'http://plane' })).toContain('PLANE_API_KEY');
  });
  it('agents never inherit orch secrets', () => {
    const env = childBaseEnv({ PATH: '/bin', DATABASE_URL: 'postgres://x', GITEA_TOKEN: 't', PLANE_API_KEY: 'k', ORCH_API_TOKEN: 'a', HOME: '/root' });
    expect(env).toEqual({ PATH: '/bin', HOME: '/root' });
  });
});
