/**
 * The reconciliation poll: Plane retries a webhook only when it cannot connect, so a delivery
 * answered with an error, or lost on the way, would be missed for good. Every pass lists, for
 * each project linked to Plane, the issues sitting in the start state ("To Analyse") and the
 * stop state ("STOP"), and feeds each through the same decision as the webhook.
 *
 * Idempotent: each issue becomes a synthetic `issue` event whose dedupe key is the one its webhook
 * would have had (event, field `state`, the new state id, the issue's `updated_at`), so an issue
 * already acted on — by its webhook or by an earlier pass — is a duplicate and nothing happens.
 * An issue moved away and back gets a new `updated_at`, hence a new key.
 *
 * Never raises: a project whose listing fails is logged and skipped until the next pass.
 */
import { listProjects } from '../db/queries/projects.ts';
import type { Logger } from '../runtime/logger.ts';
import type { Services } from '../runtime/services.ts';
import type { PlaneTracker } from '../tracker/plane.ts';
import type { PlaneIssueEvent } from '../tracker/plane-webhook.ts';
import { handlePlaneEvent, type IntakeOutcome } from './plane.ts';

export interface ReconcileResult {
  projects: number;
  /** issues found in the start or stop state */
  seen: number;
  outcomes: Partial<Record<IntakeOutcome, number>>;
  errors: number;
}

export type ReconcileTracker = Pick<PlaneTracker, 'resolveStateId' | 'listIssuesInStates' | 'getIssue'>;

export async function reconcilePlane(
  d: Pick<Services, 'db' | 'boss' | 'config'> & { log: Logger },
  tracker: ReconcileTracker,
): Promise<ReconcileResult> {
  const res: ReconcileResult = { projects: 0, seen: 0, outcomes: {}, errors: 0 };
  const { start, stop } = d.config.plane.states;
  let projects;
  try {
    projects = (await listProjects(d.db)).filter((p) => p.plane_project_id);
  } catch (err) {
    d.log.error({ err }, 'plane reconcile: cannot list projects');
    res.errors++;
    return res;
  }
  for (const project of projects) {
    const planeProjectId = project.plane_project_id!;
    res.projects++;
    try {
      const startId = await tracker.resolveStateId(planeProjectId, start);
      const stopId = d.config.stop.enabled ? await tracker.resolveStateId(planeProjectId, stop) : null;
      const names = [startId ? start : null, stopId ? stop : null].filter((n): n is string => n !== null);
      if (names.length === 0) continue;
      const issues = await tracker.listIssuesInStates(planeProjectId, names);
      for (const summary of issues) {
        res.seen++;
        try {
          // The list carries no updated_at; the issue itself does (and its current state).
          const issue = await tracker.getIssue(planeProjectId, summary.id);
          if (!issue || issue.stateId === null || (issue.stateId !== startId && issue.stateId !== stopId)) continue;
          const event: PlaneIssueEvent = {
            event: 'issue',
            action: 'updated',
            webhookId: null,
            workspaceId: null,
            projectId: planeProjectId,
            issueId: issue.id,
            issueName: issue.name,
            issueDescription: issue.description,
            stateId: issue.stateId,
            stateName: issue.stateId === startId ? start : stop,
            field: 'state',
            newValue: issue.stateId,
            oldValue: null,
            actorId: null,
            activityAt: issue.updatedAt,
          };
          const r = await handlePlaneEvent(d, event, {
            deliveryId: `reconcile:${issue.id}:${issue.stateId}:${issue.updatedAt ?? ''}`,
            payload: { source: 'reconcile', issue },
            source: 'reconcile',
          });
          res.outcomes[r.outcome] = (res.outcomes[r.outcome] ?? 0) + 1;
        } catch (err) {
          res.errors++;
          d.log.warn({ err, project: project.slug, issueId: summary.id }, 'plane reconcile: issue failed');
        }
      }
    } catch (err) {
      res.errors++;
      d.log.warn({ err, project: project.slug }, 'plane reconcile: project failed');
    }
  }
  return res;
}
