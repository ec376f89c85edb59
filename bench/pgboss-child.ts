/**
 * A bare pg-boss worker process for the requeue benchmark: `node bench/pgboss-child.ts <url> <queue>`.
 * Its handler runs `sleep 60` (like orch's agent in that benchmark) and prints
 * `started <jobId> <sleepPid>` once the process runs; the parent SIGKILLs this process.
 */
import { PgBoss, execa } from './deps.ts';

const [url, queue] = process.argv.slice(2);
const boss = new PgBoss({ connectionString: url!, schema: 'pgboss', useListenNotify: true, supervise: false, schedule: false, max: 2 });
boss.on('error', () => {});
await boss.start();
await boss.work(queue!, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
  const child = execa('sleep', ['60'], { stdin: 'ignore', reject: false });
  process.stdout.write(`started ${job!.id} ${child.pid}\n`);
  await child;
});
process.stdout.write('ready\n');
