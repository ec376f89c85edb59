/**
 * The OpenAPI 3.1 document of the HTTP API. Request bodies come from the zod schemas that validate
 * them (`z.toJSONSchema`), so the document cannot drift from what the routes accept; responses
 * are described by hand.
 */
import { z } from 'zod';
import { projectInputSchema } from '@orch/shared/pipeline/projects';
import { JOB_STATUSES, TASK_STAGES } from '@orch/shared/stages';
import { newTaskSchema } from './routes/tasks.ts';

type Json = Record<string, unknown>;

/** JSON Schema 2020-12 (OpenAPI 3.1's dialect) of what a client may send. */
export function requestSchema(schema: z.ZodType): Json {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12' }) as Json;
  return rest;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json, description: string) => ({ description, content: { 'application/json': { schema } } });
const error = (description: string) => json(ref('Error'), description);
const idParam = { name: 'id', in: 'path', required: true, description: 'task id', schema: { type: 'integer', minimum: 1 } };
const bearer = [{ bearer: [] }];

const timestamp = { type: 'string', format: 'date-time' };
const nullable = (schema: Json) => ({ anyOf: [schema, { type: 'null' }] });

const components = {
  securitySchemes: {
    bearer: { type: 'http', scheme: 'bearer', description: 'ORCH_API_TOKEN; required on mutating routes only when it is set' },
  },
  schemas: {
    Error: {
      type: 'object',
      required: ['error'],
      properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
    },
    NewTask: requestSchema(newTaskSchema),
    ProjectInput: requestSchema(projectInputSchema),
    Task: {
      type: 'object',
      properties: {
        id: { type: 'integer' },
        project_id: { type: 'integer' },
        plane_issue_id: nullable({ type: 'string' }),
        title: { type: 'string' },
        body: { type: 'string' },
        stage: { type: 'string', enum: [...TASK_STAGES] },
        branch: nullable({ type: 'string' }),
        waiting_for: nullable({ type: 'string', enum: ['serial', 'dependencies'] }),
        blocked_at: nullable(timestamp),
        blocked_reason: nullable({ type: 'string' }),
        cancel_requested_at: nullable(timestamp),
        cancelled_at: nullable(timestamp),
        critical_started_at: nullable(timestamp),
        created_at: timestamp,
        updated_at: timestamp,
      },
    },
    Job: {
      type: 'object',
      properties: {
        id: { type: 'integer' },
        task_id: { type: 'integer' },
        stage: { type: 'string' },
        status: { type: 'string', enum: [...JOB_STATUSES] },
        attempt: { type: 'integer' },
        worker_id: nullable({ type: 'string' }),
        host: nullable({ type: 'string' }),
        started_at: nullable(timestamp),
        finished_at: nullable(timestamp),
        reason: { description: 'stable machine code of the outcome (tests_failed_exit_1, agent_auth, stalled, …)', ...nullable({ type: 'string' }) },
        detail: { description: "the failure in words: the agent's error, the gate's verdict, the budget or stall with its figure", ...nullable({ type: 'string' }) },
        failure_class: { description: 'config: blocked at once; transient: retried after a backoff; agent: retried with the failure in the next prompt', ...nullable({ type: 'string', enum: ['config', 'transient', 'agent'] }) },
      },
    },
    Project: {
      type: 'object',
      properties: {
        id: { type: 'integer' },
        slug: { type: 'string' },
        repo_url: { type: 'string' },
        base_branch: { type: 'string' },
        serial: { type: 'boolean' },
        max_concurrency: { type: 'integer' },
      },
    },
    Queue: {
      type: 'object',
      required: ['jobs', 'workers', 'reaper', 'stop', 'merge'],
      properties: {
        jobs: {
          type: 'object',
          properties: {
            counts: { type: 'object', properties: Object.fromEntries(JOB_STATUSES.map((s) => [s, { type: 'integer' }])) },
            running: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'integer' },
                  task_id: { type: 'integer' },
                  stage: { type: 'string' },
                  attempt: { type: 'integer' },
                  worker_id: nullable({ type: 'string' }),
                  host: nullable({ type: 'string' }),
                  pid: nullable({ type: 'integer' }),
                  started_at: timestamp,
                  heartbeat_at: nullable(timestamp),
                  finished_age_s: { description: 'seconds since the agent exited; null while it runs', ...nullable({ type: 'number' }) },
                },
              },
            },
          },
        },
        workers: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              id: { type: 'string' },
              host: { type: 'string' },
              pid: { type: 'integer' },
              heartbeat_at: timestamp,
              heartbeat_age_s: { type: 'number' },
              running: { type: 'integer' },
            },
          },
        },
        reaper: {
          type: 'object',
          properties: {
            enabled: { type: 'boolean' },
            leader: { description: '"<host_id>:<pid>" of the acting reaper', ...nullable({ type: 'string' }) },
            last_tick_at: nullable(timestamp),
            interval_s: { type: 'number' },
            reaped: { type: 'object', properties: { dead_owner: { type: 'integer' }, known_outcome: { type: 'integer' }, max_running: { type: 'integer' } } },
            lease_reclaims: { type: 'integer' },
            last_error: nullable({ type: 'string' }),
          },
        },
        stop: {
          type: 'object',
          properties: {
            enabled: { type: 'boolean' },
            pending: { type: 'array', items: { type: 'integer' } },
            deferred: { type: 'array', items: { type: 'integer' } },
            completed_total: { type: 'integer' },
            last_error: nullable({ type: 'string' }),
          },
        },
        merge: {
          type: 'object',
          properties: {
            leases: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  project: { type: 'string' },
                  job_id: { type: 'integer' },
                  backend_pid: { type: 'integer' },
                  acquired_at: timestamp,
                  age_s: { type: 'number' },
                },
              },
            },
          },
        },
      },
    },
  },
};

const taskBody = { type: 'object', required: ['task'], properties: { task: ref('Task') } };

const paths = {
  '/webhooks/plane': {
    post: {
      summary: 'Plane webhook (issue events)',
      description:
        'Authenticated by `X-Plane-Signature`: hex HMAC-SHA256 of the raw body with PLANE_WEBHOOK_SECRET (timing-safe). ' +
        'Redelivery is harmless (deduplicated by content). "To Analyse" starts a task, STOP cancels it.',
      parameters: [
        { name: 'X-Plane-Signature', in: 'header', required: true, schema: { type: 'string' } },
        { name: 'X-Plane-Delivery', in: 'header', required: false, schema: { type: 'string' } },
      ],
      requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', description: 'a Plane webhook payload (event, action, data)' } } } },
      responses: {
        '202': json({ type: 'object', properties: { status: { type: 'string' }, task_id: nullable({ type: 'integer' }) } }, 'accepted'),
        '400': error('malformed payload'),
        '401': error('missing or bad signature'),
        '503': error('PLANE_WEBHOOK_SECRET is not configured'),
      },
    },
  },
  '/queue': {
    get: { summary: 'Queue snapshot: jobs, workers, reaper, stop, merge', responses: { '200': json(ref('Queue'), 'the snapshot') } },
  },
  '/tasks': {
    get: {
      summary: 'List tasks, newest first',
      parameters: [
        { name: 'stage', in: 'query', required: false, schema: { type: 'string', enum: [...TASK_STAGES] } },
        { name: 'project', in: 'query', required: false, description: 'project slug', schema: { type: 'string' } },
        { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 1000, default: 200 } },
      ],
      responses: {
        '200': json({ type: 'object', properties: { tasks: { type: 'array', items: ref('Task') } } }, 'tasks'),
        '400': error('bad query'),
        '404': error('unknown project'),
      },
    },
    post: {
      summary: 'Create a task without Plane (local tracker)',
      security: bearer,
      requestBody: { required: true, content: { 'application/json': { schema: ref('NewTask') } } },
      responses: { '201': json(taskBody, 'created'), '400': error('invalid body'), '401': error('missing or bad token'), '404': error('unknown project') },
    },
  },
  '/tasks/{id}': {
    get: {
      summary: 'One task with its jobs, agent runs, events and artefacts',
      parameters: [idParam],
      responses: {
        '200': json(
          {
            type: 'object',
            properties: {
              task: ref('Task'),
              jobs: { type: 'array', items: ref('Job') },
              runs: { type: 'array', items: { type: 'object' } },
              events: { type: 'array', items: { type: 'object' } },
              artefacts: { type: 'array', items: { type: 'object' } },
            },
          },
          'the task',
        ),
        '400': error('bad id'),
        '404': error('unknown task'),
      },
    },
  },
  '/tasks/{id}/stop': {
    post: {
      summary: 'STOP: cancel everything about the task (same as Plane STOP)',
      security: bearer,
      parameters: [idParam],
      responses: {
        '202': json({ type: 'object', properties: { status: { const: 'requested' }, task: ref('Task') } }, 'cancel requested; it completes within seconds'),
        '200': json(
          { type: 'object', properties: { status: { type: 'string', enum: ['already_requested', 'already_cancelled', 'already_done'] }, task: ref('Task') } },
          'nothing to do',
        ),
        '401': error('missing or bad token'),
        '404': error('unknown task'),
        '409': error('stop_disabled (ORCH_STOP_STATUS_ENABLED=false)'),
      },
    },
  },
  '/tasks/{id}/retry': {
    post: {
      summary: 'Requeue a blocked task in its stage',
      security: bearer,
      parameters: [idParam],
      responses: { '202': json(taskBody, 'requeued'), '401': error('missing or bad token'), '404': error('unknown task'), '409': error('not blocked') },
    },
  },
  '/projects': {
    get: { summary: 'List projects', responses: { '200': json({ type: 'object', properties: { projects: { type: 'array', items: ref('Project') } } }, 'projects') } },
    post: {
      summary: 'Register a project',
      security: bearer,
      requestBody: { required: true, content: { 'application/json': { schema: ref('ProjectInput') } } },
      responses: {
        '201': json({ type: 'object', properties: { project: ref('Project') } }, 'created'),
        '400': error('invalid body or unreachable repository'),
        '401': error('missing or bad token'),
        '409': error('slug taken'),
      },
    },
  },
  '/healthz': { get: { summary: 'Liveness', responses: { '200': json({ type: 'object', properties: { ok: { const: true } } }, 'alive') } } },
  '/readyz': {
    get: {
      summary: 'Readiness: database reachable and migrations current',
      responses: { '200': json({ type: 'object', properties: { ok: { const: true } } }, 'ready'), '503': error('not ready') },
    },
  },
  '/metrics': {
    get: {
      summary: 'Prometheus metrics, computed from Postgres at scrape time',
      responses: { '200': { description: 'text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
  },
  '/': { get: { summary: 'Dashboard (HTML)', responses: { '200': { description: 'the dashboard page', content: { 'text/html': { schema: { type: 'string' } } } } } } },
  '/docs': { get: { summary: 'API reference (HTML)', responses: { '200': { description: 'this document as a page', content: { 'text/html': { schema: { type: 'string' } } } } } } },
  '/openapi.json': { get: { summary: 'This document', responses: { '200': json({ type: 'object' }, 'OpenAPI 3.1') } } },
};

export function openApiDocument(): Json {
  return {
    openapi: '3.1.0',
    info: {
      title: 'orch',
      version: '0.1.0',
      description:
        'orch runs AI coding agents on tasks through analysis → implementation → review → merge → deploy → done. ' +
        'Errors are JSON `{"error":{"code","message"}}`; mutating routes need `Authorization: Bearer $ORCH_API_TOKEN` when it is set.',
    },
    paths,
    components,
  };
}
