#!/bin/sh
# The soak's no-op agent (bench/soak.ts): follows the agent contract like the demo agent, but
# keeps the repository's tree the same size however many tasks run. Implementation rewrites one
# of 64 slot files (task id mod 64) instead of adding a file per task: with one file per task,
# every checkout, index refresh and merge grows with the run, and the soak would measure git on
# a growing tree instead of orch. Tasks in flight at the same time have nearby ids, so they
# never share a slot and never conflict.
set -e
mkdir -p "$ORCH_ARTEFACT_DIR"
case "$ORCH_STAGE" in
  analysis) printf '# analysis of task %s\n' "$ORCH_TASK_ID" > "$ORCH_ARTEFACT_DIR/analysis.md" ;;
  implementation)
    mkdir -p soak
    slot="soak/slot-$((ORCH_TASK_ID % 64)).txt"
    echo "task $ORCH_TASK_ID attempt $ORCH_ATTEMPT" > "$slot"
    git add "$slot"
    git commit --quiet -m "soak: task $ORCH_TASK_ID"
    ;;
  review) printf 'VERDICT: APPROVE\n' > "$ORCH_ARTEFACT_DIR/review.md" ;;
esac
