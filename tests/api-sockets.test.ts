/**
 * Bodies over ORCH_API_BODY_LIMIT_BYTES over a real socket (the in-process `app.request` tests see
 * only the 413): every client gets `413 {"error":{"code":"payload_too_large"}}`, never a
 * connection reset — Node's fetch (Content-Length and chunked), curl (with its
 * `Expect: 100-continue` and without), and a client that sends the whole body before it reads,
 * like Python's http.client, which the reset hit every time. Then the bounds of the drain that
 * makes this work: a keep-alive connection stays usable, a body past the byte bound or a client
 * that stalls past the time bound loses its connection; and a port in use is one line, exit 1.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveApp, type Served } from '@orch/api/serve';
import { freePort, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';
import { apiOf } from './support/stop-helpers.ts';

const MiB = 1024 * 1024;
const LIMIT = MiB; // the default ORCH_API_BODY_LIMIT_BYTES
const SIZES = [['1 MB', LIMIT + 1], ['5 MB', 5 * MiB], ['50 MB', 50 * MiB]] as const;
const ROUTES = ['/tasks', '/projects', '/webhooks/plane'];

/** A JSON body of exactly `size` bytes. */
function jsonBody(size: number): Buffer {
  const head = '{"project":"p","title":"';
  const tail = '"}';
  return Buffer.from(head + 'x'.repeat(size - head.length - tail.length) + tail);
}

function expectTooLarge(status: number, body: string, what: string) {
  expect(status, what).toBe(413);
  expect(JSON.parse(body), what).toMatchObject({ error: { code: 'payload_too_large' } });
}

interface RawAnswer {
  /** everything the server sent */
  received: string;
  /** the socket error, if the connection broke (ECONNRESET, EPIPE) */
  error: string | null;
  closedAfterMs: number;
}

/**
 * A client that writes its whole request (and whatever follows it) before it reads anything, then
 * collects what the server sends until the connection closes.
 */
function rawExchange(port: number, parts: Array<Buffer | string>, opts: { stallMs?: number } = {}): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    let error: string | null = null;
    socket.on('data', (d) => (received += d.toString('latin1')));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => resolve({ received, error, closedAfterMs: Date.now() - t0 }));
    socket.on('connect', () => {
      for (const p of parts) socket.write(p);
      if (opts.stallMs === undefined) return;
      // a client that stops sending: the server must not wait for it forever
      setTimeout(() => socket.destroy(), opts.stallMs);
    });
  });
}

function postHead(p: string, headers: Record<string, string | number>): string {
  const lines = Object.entries({ Host: '127.0.0.1', 'Content-Type': 'application/json', ...headers }).map(([k, v]) => `${k}: ${v}`);
  return `POST ${p} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}

function chunked(body: Buffer, size = 64 * 1024): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const c = body.subarray(i, i + size);
    out.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(out);
}

/** The responses in what a raw client received: status and body of each. */
function responses(received: string): Array<{ status: number; body: string }> {
  const out: Array<{ status: number; body: string }> = [];
  let rest = received;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.slice(0, end);
    const status = Number(head.slice(9, 12));
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    out.push({ status, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

let orch: Orch;
let base = '';
let port = 0;
let files = '';
const bodies = new Map<number, Buffer>();
beforeAll(async () => {
  orch = await startOrch();
  port = await freePort();
  orch.spawn(['api', '--port', String(port)], { PLANE_WEBHOOK_SECRET: 'whsec-sockets' });
  base = `http://127.0.0.1:${port}`;
  files = await tempDir('orch-bodies-');
  for (const [, size] of SIZES) {
    bodies.set(size, jsonBody(size));
    await fs.writeFile(path.join(files, `${size}.json`), bodies.get(size)!);
  }
  await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 20_000, 'api up');
});
afterAll(async () => {
  await orch?.close();
  if (files) await fs.rm(files, { recursive: true, force: true });
});

describe('a body over the limit, over a real socket, is a 413 for every client', () => {
  it.each(SIZES)('Node fetch, %s, every route: Content-Length and chunked', async (label, size) => {
    const body = bodies.get(size)!;
    for (const route of ROUTES) {
      const r = await fetch(`${base}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expectTooLarge(r.status, await r.text(), `fetch ${label} ${route}`);
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < body.length; i += 64 * 1024) c.enqueue(body.subarray(i, i + 64 * 1024));
          c.close();
        },
      });
      const s = await fetch(`${base}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
      expectTooLarge(s.status, await s.text(), `fetch chunked ${label} ${route}`);
    }
  });

  it.each(SIZES)('curl, %s, every route: with its Expect: 100-continue (the body is never sent) and without', async (label, size) => {
    const file = path.join(files, `${size}.json`);
    for (const route of ROUTES) {
      for (const extra of [[], ['-H', 'Expect:']]) {
        const r = await execa('curl', ['-sS', '-o', '-', '-w', '\n%{http_code} %{size_upload}', '-X', 'POST', '-H', 'content-type: application/json', ...extra, '--data-binary', `@${file}`, `${base}${route}`], { reject: false });
        const what = `curl ${extra.join(' ')} ${label} ${route}`;
        expect(r.stderr, what).toBe('');
        expect(r.exitCode, what).toBe(0);
        const [body, tail] = [r.stdout.slice(0, r.stdout.lastIndexOf('\n')), r.stdout.slice(r.stdout.lastIndexOf('\n') + 1)];
        const [code, uploaded] = tail.split(' ').map(Number);
        expectTooLarge(code!, body, what);
        if (extra.length === 0) expect(uploaded, `${what}: no 100 Continue, no body sent`).toBe(0);
      }
    }
  });

  it.each(SIZES)('a client that sends all of it before reading, %s, every route: the 413 arrives, no reset', async (label, size) => {
    const body = bodies.get(size)!;
    for (const route of ROUTES) {
      for (const mode of ['Content-Length', 'chunked'] as const) {
        const head = mode === 'chunked' ? postHead(route, { 'Transfer-Encoding': 'chunked', Connection: 'close' }) : postHead(route, { 'Content-Length': body.length, Connection: 'close' });
        const a = await rawExchange(port, [head, mode === 'chunked' ? chunked(body) : body]);
        const what = `${mode} ${label} ${route}`;
        expect(a.error, what).toBeNull();
        const [first] = responses(a.received);
        expect(first, `${what}: ${a.received.slice(0, 200)}`).toBeDefined();
        expectTooLarge(first!.status, first!.body, what);
      }
    }
  });

  it('a keep-alive connection stays usable after a 413: the next request on it is answered', async () => {
    const body = bodies.get(5 * MiB)!;
    const next = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';
    const a = await rawExchange(port, [postHead('/tasks', { 'Content-Length': body.length }), body, next]);
    expect(a.error).toBeNull();
    const rs = responses(a.received);
    expect(rs.map((r) => r.status)).toEqual([413, 200]);
    const c = await rawExchange(port, [postHead('/tasks', { 'Transfer-Encoding': 'chunked' }), chunked(body), next]);
    expect(c.error).toBeNull();
    expect(responses(c.received).map((r) => r.status)).toEqual([413, 200]);
  });

  it('Expect: 100-continue over the limit is answered at once without 100 Continue; within it, 100 Continue', async () => {
    const over = await rawExchange(port, [postHead('/tasks', { 'Content-Length': 5 * MiB, Expect: '100-continue' })]);
    expect(over.received).not.toContain('100 Continue');
    const [r] = responses(over.received);
    expectTooLarge(r!.status, r!.body, 'expect over the limit');
    expect(over.received).toMatch(/\r\nconnection: close\r\n/i);

    const small = Buffer.from(JSON.stringify({ project: 'nope', title: 'small' }));
    const within = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      let got = '';
      s.on('error', reject);
      s.on('data', (d) => {
        got += d.toString();
        if (got === 'HTTP/1.1 100 Continue\r\n\r\n') s.write(small); // (no half-close: the server would drop the request)
      });
      s.on('close', () => resolve(got));
      s.write(postHead('/tasks', { 'Content-Length': small.length, Expect: '100-continue', Connection: 'close' }));
    });
    expect(within).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 404 /); // the body was read: unknown project
  });
});

describe('the drain after a response is bounded', () => {
  let served: Served | undefined;
  afterAll(async () => served?.close());

  it('past the byte bound the connection is dropped; a client that stalls is dropped after the time bound', async () => {
    served = await serveApp(apiOf(orch).app, 0, '127.0.0.1', { bodyLimitBytes: LIMIT, drain: { maxBytes: 4 * MiB, maxMs: 400 } });
    const huge = Buffer.alloc(50 * MiB, 'x');
    const a = await rawExchange(served.port, [postHead('/tasks', { 'Content-Length': huge.length }), huge]);
    expect(a.error, 'a body far past the byte bound loses its connection').toMatch(/^(ECONNRESET|EPIPE)$/);

    // declares 10 MB, sends 2 MB, then nothing: the 413 arrives, the connection goes after ~400 ms
    const part = Buffer.alloc(2 * MiB, 'x');
    const b = await rawExchange(served.port, [postHead('/tasks', { 'Content-Length': 10 * MiB }), part], { stallMs: 10_000 });
    expect(responses(b.received).map((r) => r.status)).toEqual([413]);
    expect(b.closedAfterMs).toBeGreaterThanOrEqual(400);
    expect(b.closedAfterMs).toBeLessThan(5_000);
  });
});

describe('a port in use', () => {
  it('orch api on a bound port: exit 1, one line naming the port and ORCH_API_PORT', async () => {
    const blocker = net.createServer();
    const taken = await freePort();
    await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', r));
    try {
      const r = await orch.spawn(['api', '--port', String(taken)]);
      expect(r.exitCode).toBe(1);
      expect(String(r.stderr).trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^orch: port ${taken} .*in use.*ORCH_API_PORT`))]);
      expect(r.stderr).not.toMatch(/Unhandled|EADDRINUSE|\n\s+at /);
      const viaEnv = await orch.spawn(['api'], { ORCH_API_PORT: String(taken) });
      expect(viaEnv.exitCode).toBe(1);
      expect(viaEnv.stderr).toMatch(new RegExp(`^orch: port ${taken} .*ORCH_API_PORT`));
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});
