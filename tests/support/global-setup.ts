/**
 * Once per test run: find a Postgres (TEST_DATABASE_URL, else the local server on
 * 127.0.0.1:5432, else an embedded one), build a migrated template database (orch schema and
 * pg-boss's), and hand both to the test files, which each clone the template (fast).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { createDb } from '@orch/shared/db/client';
import { migrateToLatest } from '@orch/shared/db/migrate';
import { createBoss, startBoss } from '@orch/shared/queue';
import { databaseAnswers } from '@orch/cli/embedded-postgres';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    templateDb: string;
  }
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export default async function setup(project: TestProject) {
  let adminUrl = process.env.TEST_DATABASE_URL;
  let stopEmbedded: (() => Promise<void>) | null = null;
  if (!adminUrl) {
    const local = 'postgres://postgres@127.0.0.1:5432/postgres';
    if (await databaseAnswers(local)) adminUrl = local;
  }
  if (!adminUrl) {
    const { startEmbeddedPostgres } = await import('@orch/cli/embedded-postgres');
    const home = await fs.mkdtemp(path.join(os.tmpdir(), 'orch-test-pg-'));
    const e = await startEmbeddedPostgres(home, 54000 + Math.floor(Math.random() * 900), () => {});
    adminUrl = withDatabase(e.url, 'postgres');
    stopEmbedded = e.stop;
  }
  // one template per vitest project (the suite runs as two: unsandboxed and sandboxed)
  const template = `orch_tpl_${process.pid}${project.name ? `_${project.name.replace(/\W/g, '')}` : ''}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${template}`);
  await admin.query(`CREATE DATABASE ${template}`);
  const url = withDatabase(adminUrl, template);
  const h = createDb(url, { max: 2 });
  const m = await migrateToLatest(h.db);
  if (m.error) throw new Error(`template migration failed: ${m.error}`);
  await h.close();
  const boss = createBoss(url, { supervise: false });
  await startBoss(boss);
  await boss.stop({ graceful: false, timeout: 1000, close: true });
  // no connection may stay open on a template
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [template]);
  project.provide('pgAdminUrl', adminUrl);
  project.provide('templateDb', template);

  return async () => {
    const dbs = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = $2`, [`${template}_%`, template]);
    for (const { datname } of dbs.rows) {
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [datname]).catch(() => {});
      await admin.query(`DROP DATABASE IF EXISTS ${datname}`).catch(() => {});
    }
    await admin.end();
    if (stopEmbedded) await stopEmbedded();
  };
}
