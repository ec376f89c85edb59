/**
 * "Is this task finished?" in SQL, built from `TERMINAL_STAGES` (stages.ts), so a new terminal
 * stage is one edit there. The stages travel as one array parameter (`= ANY($1::text[])`): pg
 * sends unnamed statements, which Postgres plans with the bound value, so the partial indexes of
 * migration 0003 (declared `WHERE stage IN ('done', 'cancelled')`) still match.
 */
import { sql, type RawBuilder } from 'kysely';
import { TERMINAL_STAGES } from '../../stages.ts';

const terminal = [...TERMINAL_STAGES];

/** `<column>` is a terminal stage: a Kysely `where()` argument or a fragment of a sql`` template. */
export function stageIsTerminal(column: string): RawBuilder<boolean> {
  return sql<boolean>`${sql.ref(column)} = ANY(${terminal}::text[])`;
}

/** `<column>` is a live stage (not done, not cancelled). */
export function stageIsLive(column: string): RawBuilder<boolean> {
  return sql<boolean>`${sql.ref(column)} <> ALL(${terminal}::text[])`;
}
