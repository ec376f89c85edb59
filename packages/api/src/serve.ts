/**
 * Serve a Hono app on a real port (@hono/node-server). What the in-process `app.request()` tests
 * cannot see is handled here, at the socket:
 * - A request body the app did not read to its end (a 413 answered from `Content-Length`, a
 *   chunked body cut off at the limit, a route that never reads its body) is read and dropped
 *   before the response goes out. Answering while the client is still sending and then closing
 *   resets the connection, and a client that sends its whole body before it reads (Python's
 *   http.client, many SDKs) never sees the answer. The drain is bounded (DRAIN_MAX_BYTES,
 *   DRAIN_MAX_MS): past either bound reading stops, the answer goes out with
 *   `Connection: close` and the connection closes, so a hostile client can neither hold a
 *   socket nor make the server read without end.
 * - A client that asks `Expect: 100-continue` for a declared body over the limit is answered at
 *   once, without "100 Continue" (so it never sends the body), and the connection closes.
 * - A port in use is a `PortInUseError`, not an unhandled 'error' event.
 * `close()` also drops keep-alive sockets.
 */
import type http from 'node:http';
import { createAdaptorServer, type Http2Bindings, type HttpBindings } from '@hono/node-server';

/** What is read and dropped of an unread request body, at most. */
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
const DRAIN_MAX_MS = 30_000;

export interface Served {
  port: number;
  close(): Promise<void>;
}

interface ServeOptions {
  /** the app's body limit: an `Expect: 100-continue` request declaring more is answered at once */
  bodyLimitBytes?: number;
  /** bounds of the drain of an unread body (defaults DRAIN_MAX_BYTES, DRAIN_MAX_MS) */
  drain?: { maxBytes: number; maxMs: number };
}

export class PortInUseError extends Error {
  readonly port: number;
  constructor(port: number, hostname: string) {
    super(`port ${port} on ${hostname} is already in use`);
    this.name = 'PortInUseError';
    this.port = port;
  }
}

/**
 * Read and drop what is left of a request body: `ended` once it has all arrived; `bounded` when
 * a bound was reached first (reading stops; the connection must close after the answer).
 */
function drainBody(req: http.IncomingMessage, bounds: { maxBytes: number; maxMs: number }): Promise<'ended' | 'bounded'> {
  if (req.complete || req.readableEnded || req.destroyed) return Promise.resolve('ended');
  return new Promise((resolve) => {
    let bytes = 0;
    const settle = (how: 'ended' | 'bounded') => {
      clearTimeout(timer);
      req.off('data', count);
      if (how === 'bounded') req.pause();
      resolve(how);
    };
    const count = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > bounds.maxBytes) settle('bounded');
    };
    const timer = setTimeout(() => settle('bounded'), bounds.maxMs);
    // whoever was reading (the app's body stream) is done with it: only the drain reads now
    req.removeAllListeners('data');
    req.on('data', count);
    req.once('end', () => settle('ended'));
    req.once('close', () => settle('ended'));
    req.resume();
  });
}

/** The same response, with `Connection: close`. */
function closing(response: Response): Response {
  const headers = new Headers(response.headers);
  headers.set('connection', 'close');
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

export function serveApp(
  app: { fetch: (req: Request, env?: HttpBindings) => Response | Promise<Response> },
  port: number,
  hostname: string,
  opts: ServeOptions = {},
): Promise<Served> {
  const bounds = opts.drain ?? { maxBytes: DRAIN_MAX_BYTES, maxMs: DRAIN_MAX_MS };
  /** requests answered without "100 Continue": their body is not coming */
  const refused = new WeakSet<http.IncomingMessage>();
  const server = createAdaptorServer({
    hostname,
    // it would destroy an unread request, and its socket, right after the response
    autoCleanupIncoming: false,
    fetch: async (request: Request, env: HttpBindings | Http2Bindings) => {
      const response = await app.fetch(request, env as HttpBindings);
      const incoming = env.incoming as http.IncomingMessage;
      if (refused.has(incoming)) return response;
      return (await drainBody(incoming, bounds)) === 'ended' ? response : closing(response);
    },
  }) as http.Server;
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (opts.bodyLimitBytes !== undefined && Number(req.headers['content-length']) > opts.bodyLimitBytes) {
      refused.add(req);
      res.setHeader('Connection', 'close');
    } else {
      res.writeContinue();
    }
    server.emit('request', req, res);
  });
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new PortInUseError(port, hostname) : err);
    server.once('error', failed);
    server.listen(port, hostname, () => {
      server.off('error', failed);
      resolve({
        port: (server.address() as { port: number }).port,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            // keep-alive connections would hold close() open for their whole idle timeout
            server.closeAllConnections();
          }),
      });
    });
  });
}
