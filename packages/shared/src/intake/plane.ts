/**
 * What a Plane issue event means for orch. "To Analyse" is the only pipeline entry: it creates
 * a task when no live task has the issue, or relaunches a task still in analysis whose job
 * failed (or that is blocked there); in any later stage it is ignored. "STOP" is the cancel.
 * Redelivery is harmless: deliveries are deduplicated by meaning, and every action is
 * idempotent anyway (unique plane_issue_id, one live job per task, idempotent cancel).
 */
import { requestCancel } from '../cancel.ts';
import type { Config } from '../runtime/config.ts';
import { liveJobOfTask } from '../db/queries/jobs.ts';
import { getProjectByPlaneId } from '../db/queries/projects.ts';
import { getLiveTaskByIssue } from '../db/queries/tasks.ts';
import { tryLockDeliveryKey } from '../db/queries/advisory-locks.ts';
import { noteIssueState } from '../db/queries/plane-poll.ts';
import { deliverySeen, recordDelivery } from '../db/queries/webhooks.ts';
import type { Project } from '../db/types.ts';
import { OrchError } from '../runtime/errors.ts';
import type { Logger } from '../runtime/logger.ts';
import { createTask, retryTask } from '../pipeline/tasks.ts';
import type { Services } from '../runtime/services.ts';
import type { PlaneIssueEvent } from '../tracker/plane-webhook.ts';
import { isStateEvent, webhookDedupeKey } from '../tracker/plane-webhook.ts';
import { utcInstant } from '../tracker/plane-time.ts';

export type IntakeOutcome =
  | 'duplicate'
  | 'ignored_event'
  | 'ignored_echo'
  | 'ignored_field'
  | 'ignored_unknown_project'
  | 'ignored_state'
  | 'ignored_stop_disabled'
  | 'ignored_not_relaunchable'
  | 'ignored_unknown_issue'
  | 'task_created'
  | 'task_relaunched'
  | 'stop_requested'
  | 'stop_already';

const norm = (s: string) => s.trim().toLowerCase();

export type StateNameOf = (projectId: string, stateId: string) => Promise<string | null>;

export interface PlaneEventMeta {
  deliveryId: string | null;
  payload: unknown;
  stateNameOf?: StateNameOf | undefined;
  /** where the event came from, for the log line (default `webhook`) */
  source?: 'webhook' | 'reconcile';
}

/**
 * Act on one Plane issue event — a webhook, or a synthetic event built by the reconciliation
 * poll — at most once per meaning (`webhookDedupeKey`: issue, state, UTC `updated_at` for state
 * events), so the webhook and the poll deduplicate each other.
 *
 * What needs Plane (a state's name, when the payload carries only its id) is asked first, before
 * the transaction: an HTTP call never holds a transaction, or the delivery's lock, open.
 */
export async function handlePlaneEvent(
  d: Pick<Services, 'db' | 'boss' | 'config'> & { log: Logger },
  e: PlaneIssueEvent,
  meta: PlaneEventMeta,
): Promise<{ outcome: IntakeOutcome; taskId: number | null }> {
  const key = webhookDedupeKey(e);
  const pre = await prepare(d, d.config, e, meta.stateNameOf);
  const stateAt = utcInstant(e.updatedAt);
  // The delivery row is written in a transaction that holds the content's lock while the event is
  // acted on (on other connections): an identical delivery arriving meanwhile is a duplicate at
  // once, so the outcome recorded is the one that acted (e.g. task_created, not a loser's view).
  const result = await d.db.transaction().execute(async (tx) => {
    if (!(await tryLockDeliveryKey(tx, key))) return null;
    if (await deliverySeen(tx, key)) return null;
    const r = pre.decided ?? (await act(d, d.config, e, pre));
    const fresh = await recordDelivery(tx, {
      dedupeKey: key,
      deliveryId: meta.deliveryId,
      event: e.event,
      action: e.action,
      outcome: r.outcome,
      taskId: r.taskId,
      payload: meta.payload,
    });
    if (fresh && pre.project && isStateEvent(e) && e.stateId && stateAt) {
      await noteIssueState(tx, { issueId: e.issueId, stateId: e.stateId, stateAt, source: meta.source === 'reconcile' ? 'poll' : 'webhook' });
    }
    return fresh ? r : { outcome: 'duplicate' as const, taskId: r.taskId };
  });
  if (result === null) return { outcome: 'duplicate', taskId: null };
  d.log.info(
    { outcome: result.outcome, taskId: result.taskId, issueId: e.issueId, deliveryId: meta.deliveryId },
    meta.source === 'reconcile' ? 'plane reconcile' : 'plane webhook',
  );
  return result;
}

type Decided = { outcome: IntakeOutcome; taskId: number | null };

interface Prepared {
  /** decided without acting (ignored events): recorded as such */
  decided: Decided | null;
  project: Project | null;
  state: string | null;
}

/** Everything read before the transaction: the project, and the state's name (asking Plane if need be). */
async function prepare(d: Pick<Services, 'db'>, cfg: Config, e: PlaneIssueEvent, stateNameOf?: StateNameOf): Promise<Prepared> {
  const none = (outcome: IntakeOutcome, project: Project | null = null): Prepared => ({ decided: { outcome, taskId: null }, project, state: null });
  if (e.event !== 'issue' || !e.issueId) return none('ignored_event');
  const project = (await getProjectByPlaneId(d.db, e.projectId)) ?? null;
  if (cfg.plane.botUserId && e.actorId === cfg.plane.botUserId) return none('ignored_echo', project);
  if (!isStateEvent(e)) return none('ignored_field', project);
  if (!project) return none('ignored_unknown_project');
  let state = e.stateName;
  if (!state && e.stateId && stateNameOf) {
    try {
      state = await stateNameOf(e.projectId, e.stateId);
    } catch (err) {
      // Not recorded as seen: the reconciliation poll (same dedupe key) acts on it later.
      throw new OrchError('unavailable', `cannot resolve Plane state ${e.stateId}: ${(err as Error).message}`);
    }
  }
  if (!state) return none('ignored_state', project);
  return { decided: null, project, state };
}

async function act(d: Pick<Services, 'db' | 'boss' | 'config'>, cfg: Config, e: PlaneIssueEvent, pre: Prepared): Promise<Decided> {
  const none = (outcome: IntakeOutcome) => ({ outcome, taskId: null });
  const project = pre.project!;
  const state = pre.state!;
  if (norm(state) === norm(cfg.plane.states.stop)) {
    if (!cfg.stop.enabled) return none('ignored_stop_disabled');
    const task = await getLiveTaskByIssue(d.db, e.issueId);
    if (!task) return none('ignored_unknown_issue');
    const r = await requestCancel(d, task.id, 'plane', 'plane_stop');
    return { outcome: r.status === 'requested' ? 'stop_requested' : 'stop_already', taskId: task.id };
  }
  if (norm(state) !== norm(cfg.plane.states.start)) return none('ignored_state');

  const task = await getLiveTaskByIssue(d.db, e.issueId);
  if (!task) {
    try {
      const created = await createTask(
        d,
        { project: project.id, title: e.issueName?.trim() || `Plane issue ${e.issueId}`, body: e.issueDescription ?? '', planeIssueId: e.issueId },
        'plane',
      );
      return { outcome: 'task_created', taskId: created.id };
    } catch (err) {
      if (err instanceof OrchError && err.code === 'conflict') return none('duplicate');
      throw err;
    }
  }
  // Relaunch only in analysis, only when nothing is live (a failed or blocked analysis).
  if (task.stage !== 'analysis' || task.cancel_requested_at || task.waiting_for) return { outcome: 'ignored_not_relaunchable', taskId: task.id };
  if (await liveJobOfTask(d.db, task.id)) return { outcome: 'ignored_not_relaunchable', taskId: task.id };
  try {
    await retryTask(d, task.id, 'plane', 'plane_to_analyse');
    return { outcome: 'task_relaunched', taskId: task.id };
  } catch (err) {
    if (err instanceof OrchError && err.code === 'conflict') return { outcome: 'ignored_not_relaunchable', taskId: task.id };
    throw err;
  }
}
