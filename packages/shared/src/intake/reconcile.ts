/**
 * The reconciliation poll: Plane retries a webhook only when it cannot connect
 * (apps/api/plane/bgtasks/webhook_task.py: `autoretry_for=(requests.RequestException,)`), so a
 * delivery answered with an error, or lost on the way, would be missed for good. A pass lists, for
 * each project linked to Plane, its work items — the list alone, most recently updated first, at
 * Plane's largest page size, no GET per item — and feeds those sitting in the start state ("To
 * Analyse") or the stop state ("STOP") through the same decision as the webhook.
 *
 * Cheap on Plane's budget (60 requests a minute per key, shared with the outbox):
 * - one pass per project per interval for the whole fleet (`claimPollPass`), however many
 *   processes run the loop;
 * - a pass lists only as far back as the previous complete pass had seen (`since`), with an
 *   exhaustive pass every FULL_PASS_EVERY intervals;
 * - every request takes a poll slot of the budget, which leaves a reserve to the outbox and yields
 *   while an outbox row is due; no slot, or a 429, ends the whole pass (the next one resumes).
 *
 * Idempotent: an item becomes a synthetic `issue` event whose dedupe key is its webhook's (issue,
 * state, `updated_at` as a UTC instant). And the poll acts only on a *move*: an item still in the
 * state orch last knew it in (from a webhook, an earlier pass, or orch's own delivered state
 * change — plane_issue_states) is a duplicate even if something else about it changed since.
 *
 * Never raises: a project whose listing fails is logged and skipped until the next pass.
 */
import { claimPollPass, finishPollPass, lastIssueState } from '../db/queries/plane-poll.ts';
import { listProjects } from '../db/queries/projects.ts';
import type { Logger } from '../runtime/logger.ts';
import type { Services } from '../runtime/services.ts';
import { PlaneBudgetDenied, PlaneRateLimited, type PlaneIssue, type PlaneTracker } from '../tracker/plane.ts';
import type { PlaneIssueEvent } from '../tracker/plane-webhook.ts';
import { utcInstant } from '../tracker/plane-time.ts';
import { handlePlaneEvent, type IntakeOutcome } from './plane.ts';

export interface ReconcileResult {
  projects: number;
  /** projects another process (or an earlier pass) had already polled this interval */
  skipped: number;
  /** issues found in the start or stop state */
  seen: number;
  outcomes: Partial<Record<IntakeOutcome, number>>;
  errors: number;
  /** why the pass ended before its last project, if it did */
  stoppedBy: 'rate_limited' | 'budget' | null;
}

export type ReconcileTracker = Pick<PlaneTracker, 'resolveStateId' | 'listIssues'>;

export interface ReconcileOptions {
  /** who is polling (host:pid), for plane_poll_passes.claimed_by */
  who: string;
  /** the poll's interval: a project polled less than ~this long ago is skipped */
  intervalS: number;
}

/** An exhaustive pass (every page) at least this many intervals apart. */
export const FULL_PASS_EVERY = 10;
/** `since` reaches this far before the previous pass's newest `updated_at` (Plane's clock vs itself). */
const SINCE_SLACK_MS = 60_000;

export type PollDecision = 'act' | 'same_state' | 'stale';

/**
 * Should the poll act on an item it sees in `stateId` as of `stateAt` (UTC instants, fixed
 * format)? Only when that is news: orch never knew the issue's state, or last knew it in another
 * state at an earlier time. Pure.
 */
export function pollDecision(last: { state_id: string; state_at: string } | undefined, stateId: string, stateAt: string): PollDecision {
  if (!last) return 'act';
  if (last.state_id === stateId) return 'same_state';
  if (last.state_at >= stateAt) return 'stale';
  return 'act';
}

/** How far back this pass must list: everything (null) on the first pass and every FULL_PASS_EVERY intervals. */
export function listSince(claim: { watermark: Date | null; fullAgeS: number | null }, intervalS: number): Date | null {
  if (claim.watermark === null || claim.fullAgeS === null || claim.fullAgeS >= FULL_PASS_EVERY * intervalS) return null;
  return new Date(claim.watermark.getTime() - SINCE_SLACK_MS);
}

function eventOf(planeProjectId: string, issue: PlaneIssue & { stateId: string }, stateName: string): PlaneIssueEvent {
  return {
    event: 'issue',
    action: 'updated',
    webhookId: null,
    workspaceId: null,
    projectId: planeProjectId,
    issueId: issue.id,
    issueName: issue.name,
    issueDescription: issue.description,
    stateId: issue.stateId,
    stateName,
    field: 'state',
    newValue: issue.stateId,
    oldValue: null,
    actorId: null,
    updatedAt: issue.updatedAt,
  };
}

export async function reconcilePlane(
  d: Pick<Services, 'db' | 'boss' | 'config'> & { log: Logger },
  tracker: ReconcileTracker,
  o: ReconcileOptions,
): Promise<ReconcileResult> {
  const res: ReconcileResult = { projects: 0, skipped: 0, seen: 0, outcomes: {}, errors: 0, stoppedBy: null };
  const count = (outcome: IntakeOutcome) => (res.outcomes[outcome] = (res.outcomes[outcome] ?? 0) + 1);
  const { start, stop } = d.config.plane.states;
  let projects;
  try {
    projects = (await listProjects(d.db)).filter((p) => p.plane_project_id);
  } catch (err) {
    d.log.error({ err }, 'plane reconcile: cannot list projects');
    res.errors++;
    return res;
  }
  // Several orch projects may share a Plane project: poll each Plane project once.
  const planeProjects = [...new Set(projects.map((p) => p.plane_project_id!))];
  for (const planeProjectId of planeProjects) {
    if (res.stoppedBy) break;
    let claim;
    try {
      claim = await claimPollPass(d.db, { planeProjectId, who: o.who, minGapS: o.intervalS * 0.9 });
    } catch (err) {
      res.errors++;
      d.log.warn({ err, planeProjectId }, 'plane reconcile: cannot claim the pass');
      continue;
    }
    if (!claim) {
      res.skipped++;
      continue;
    }
    res.projects++;
    let outcome = 'ok';
    let complete = false;
    let listing = null;
    try {
      const startId = await tracker.resolveStateId(planeProjectId, start, 'poll');
      const stopId = d.config.stop.enabled ? await tracker.resolveStateId(planeProjectId, stop, 'poll') : null;
      if (startId === null && stopId === null) {
        outcome = 'no_start_or_stop_state';
        complete = true;
      } else {
        listing = await tracker.listIssues(planeProjectId, { since: listSince(claim, o.intervalS), caller: 'poll' });
        let failed = 0;
        for (const issue of listing.issues) {
          if (issue.stateId === null || (issue.stateId !== startId && issue.stateId !== stopId)) continue;
          res.seen++;
          try {
            const at = utcInstant(issue.updatedAt);
            if (at === null) throw new Error(`work item ${issue.id} has no readable updated_at (${String(issue.updatedAt)})`);
            const decision = pollDecision(await lastIssueState(d.db, issue.id), issue.stateId, at);
            if (decision !== 'act') {
              count('duplicate');
              continue;
            }
            const r = await handlePlaneEvent(d, eventOf(planeProjectId, { ...issue, stateId: issue.stateId }, issue.stateId === startId ? start : stop), {
              deliveryId: `reconcile:${issue.id}:${issue.stateId}:${at}`,
              payload: { source: 'reconcile', issue },
              source: 'reconcile',
            });
            count(r.outcome);
          } catch (err) {
            failed++;
            res.errors++;
            d.log.warn({ err, planeProjectId, issueId: issue.id }, 'plane reconcile: work item failed');
          }
        }
        complete = failed === 0;
        if (failed > 0) outcome = `${failed} work item(s) failed`;
      }
    } catch (err) {
      if (err instanceof PlaneRateLimited) {
        res.stoppedBy = 'rate_limited';
        outcome = 'rate_limited';
      } else if (err instanceof PlaneBudgetDenied) {
        res.stoppedBy = 'budget';
        outcome = `budget: ${err.reason}`;
      } else {
        res.errors++;
        outcome = 'error';
        d.log.warn({ err, planeProjectId }, 'plane reconcile: project failed');
      }
    }
    try {
      await finishPollPass(d.db, { planeProjectId, who: o.who, outcome, complete, exhaustive: listing?.exhaustive ?? false, newest: listing?.newest ?? null });
    } catch (err) {
      res.errors++;
      d.log.warn({ err, planeProjectId }, 'plane reconcile: cannot record the pass');
    }
  }
  if (res.stoppedBy) d.log.info({ stoppedBy: res.stoppedBy }, 'plane reconcile: pass stopped early; the next pass resumes');
  return res;
}
