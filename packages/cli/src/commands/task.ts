/** `orch task add | show | retry` and `orch tasks`. */
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getProjectBySlug, listProjects } from '@orch/shared/db/queries/projects';
import { getTask, listTasks } from '@orch/shared/db/queries/tasks';
import { createTask, retryTask } from '@orch/shared/pipeline/tasks';
import { OrchError } from '@orch/shared/runtime/errors';
import { TASK_STAGES, type TaskStage } from '@orch/shared/stages';
import { CliError, withDb, withRuntime } from '../context.ts';
import { formatTask, formatTasks } from '../format.ts';
import { JSON_OPTION, print, type CommandSpec, type GroupSpec } from '../registry.ts';

function taskId(arg: string | undefined, usage: string): number {
  if (!arg || !/^\d{1,15}$/.test(arg)) throw new CliError(`usage: orch ${usage}`, 2);
  return Number(arg);
}

export const taskCommand: GroupSpec = {
  summary: 'manage tasks: add | show | retry',
  subcommands: {
    add: {
      summary: 'create a task (without Plane) and print its id',
      usage: ['task add --project <slug> "<title>" [--body TEXT] [--depends-on ID,ID] [--json]'],
      options: {
        project: { type: 'string', help: 'project slug (optional when there is exactly one project)' },
        body: { type: 'string', help: 'task description given to the agent' },
        'depends-on': { type: 'string', help: 'comma-separated task ids this task waits for' },
        json: JSON_OPTION,
      },
      run: async ({ values: v, positionals: [title] }) => {
        if (!title) throw new CliError('task add needs a title: orch task add --project <slug> "<title>"', 2);
        const deps = v['depends-on'] ? String(v['depends-on']).split(',').map((s) => Number(s.trim())) : [];
        if (deps.some((d) => !Number.isInteger(d) || d <= 0)) throw new CliError('--depends-on takes task ids: 12,13', 2);
        return withRuntime(async (rt) => {
          let project = v.project ? String(v.project) : undefined;
          if (!project) {
            const all = await listProjects(rt.svc.db);
            if (all.length !== 1) throw new CliError('--project is required (there is not exactly one project)', 2);
            project = all[0]!.slug;
          }
          const task = await createTask(rt.svc, { project, title, body: v.body ? String(v.body) : '', dependsOn: deps }, 'cli');
          print(Boolean(v.json), { task }, () => `${task.id}\n`);
          return 0;
        });
      },
    },
    show: {
      summary: "a task with its jobs, agent runs and events",
      usage: ['task show <id> [--json]'],
      options: { json: JSON_OPTION },
      run: async ({ values: v, positionals: [arg] }) => {
        const id = taskId(arg, 'task show <id>');
        return withDb(async (db) => {
          const task = await getTask(db, id);
          if (!task) throw new OrchError('not_found', `unknown task: ${arg}`);
          const [jobs, runs, events] = await Promise.all([listTaskJobs(db, task.id), listTaskRuns(db, task.id), listEvents(db, task.id)]);
          print(Boolean(v.json), { task, jobs, runs, events }, () => formatTask(task, jobs, runs, events));
          return 0;
        });
      },
    },
    retry: {
      summary: 'the way on for a blocked task: a fresh job of its stage',
      usage: ['task retry <id>'],
      run: async ({ positionals: [arg] }) => {
        const id = taskId(arg, 'task retry <id>');
        return withRuntime(async (rt) => {
          const task = await retryTask(rt.svc, id, 'cli');
          process.stdout.write(`task ${task.id} requeued in ${task.stage}\n`);
          return 0;
        });
      },
    },
  },
};

export const tasksCommand: CommandSpec = {
  summary: 'list tasks (newest first)',
  usage: ['tasks [--project slug] [--stage stage] [--json]'],
  options: {
    project: { type: 'string', help: 'only tasks of this project' },
    stage: { type: 'string', help: `only tasks in this stage (${TASK_STAGES.join(', ')})` },
    json: JSON_OPTION,
  },
  run: async ({ values: v }) => {
    const stage = v.stage === undefined ? undefined : String(v.stage);
    if (stage !== undefined && !TASK_STAGES.includes(stage as TaskStage)) throw new CliError(`--stage must be one of ${TASK_STAGES.join(', ')}`, 2);
    return withDb(async (db) => {
      const project = v.project ? await getProjectBySlug(db, String(v.project)) : undefined;
      if (v.project && !project) throw new OrchError('not_found', `unknown project: ${v.project}`);
      const tasks = await listTasks(db, { projectId: project?.id, stage: stage as TaskStage | undefined });
      print(Boolean(v.json), { tasks }, () => formatTasks(tasks));
      return 0;
    });
  },
};
