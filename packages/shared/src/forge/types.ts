/**
 * The forge: where feature branches live and pull requests are merged. One interface, two
 * implementations: `local` (a plain git remote; pull requests are rows in Postgres; merge is a
 * real `git merge` pushed to base) and `gitea` (gitea-js against a Gitea server).
 *
 * Every method is safe to call again after a crash (re-drive): creating an existing pull
 * request returns it, merging a merged one reports `already_merged`, deleting a missing branch
 * reports `gone`. No method ever force-pushes, and no method deletes or rewrites the base branch.
 */
export interface PullRequest {
  number: number;
  state: 'open' | 'closed' | 'merged';
  head: string;
  base: string;
  /** sha of the head branch as the forge last saw it */
  headSha: string | null;
  /** the merge commit on base, once merged */
  mergedSha: string | null;
  url: string | null;
}

export interface OpenPullRequest {
  head: string;
  base: string;
  title: string;
  body: string;
  /** orch's task id, recorded by the local forge */
  taskId?: number;
}

export interface BranchInfo {
  exists: boolean;
  sha: string | null;
}

export type MergeResult =
  | { kind: 'merged'; sha: string }
  /** the pull request was merged before this call (a re-drive): recorded as `pr_already_merged` */
  | { kind: 'already_merged'; sha: string | null }
  /** head conflicts with base: the task goes back to implementation */
  | { kind: 'conflict'; message: string }
  /** base moved or head changed since the check: update the branch and try again */
  | { kind: 'out_of_date'; message: string }
  /**
   * the server refused the merge commit's push to base (a pre-receive hook, branch protection):
   * updating the branch will not help; `message` is the server's remote message, if any
   */
  | { kind: 'push_rejected'; message: string }
  | { kind: 'not_mergeable'; message: string };

export type UpdateBranchResult =
  | { kind: 'updated'; sha: string }
  | { kind: 'up_to_date' }
  | { kind: 'conflict'; message: string };

export type DeleteBranchResult = 'deleted' | 'gone' | 'protected';

export interface Forge {
  readonly kind: 'local' | 'gitea';
  /** git URL (or path) that workers fetch from and push feature branches to */
  readonly remoteUrl: string;
  branch(name: string): Promise<BranchInfo>;
  /** Open a pull request, or return the open one for the same head (Gitea answers 409). */
  ensurePullRequest(input: OpenPullRequest): Promise<PullRequest>;
  getPullRequest(number: number): Promise<PullRequest | null>;
  /**
   * The merge already on base, if the pull request's head is contained in base (an ancestor of
   * it): the sha of the commit that brought it in (the base tip where the forge cannot tell);
   * `null` when head is not on base (or is gone). A head reaches base without the merge being
   * recorded when the merging worker dies after the forge's push, or when someone merges by
   * hand. The merge step asks this before any branch update: merging base into such a head would
   * make it new again and merge it a second time. The local forge, which keeps pull requests in
   * Postgres, also marks the pull request merged.
   */
  mergedOnBase(pr: PullRequest): Promise<string | null>;
  /** Merge base into head if head is behind (never a force-push); up to date → `up_to_date`. */
  updateBranch(pr: PullRequest): Promise<UpdateBranchResult>;
  /** Merge the pull request, only if head is still `headSha`. */
  mergePullRequest(pr: PullRequest, opts: { headSha: string; message: string }): Promise<MergeResult>;
  /** Delete a feature branch; refuses the base branch (and anything the forge protects). */
  deleteBranch(name: string): Promise<DeleteBranchResult>;
}
