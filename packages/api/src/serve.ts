/** Serve a Hono app on a real port (@hono/node-server); `close()` also drops keep-alive sockets. */
import { serve } from '@hono/node-server';

export interface Served {
  port: number;
  close(): Promise<void>;
}

export function serveApp(app: { fetch: (req: Request) => Response | Promise<Response> }, port: number, hostname: string): Promise<Served> {
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port, hostname }, (info) =>
      resolve({
        port: info.port,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            // keep-alive connections would hold close() open for their whole idle timeout
            if ('closeAllConnections' in server) (server as { closeAllConnections(): void }).closeAllConnections();
          }),
      }),
    );
  });
}
