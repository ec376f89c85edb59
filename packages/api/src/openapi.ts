/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the routes themselves: each route file
 * declares its routes with `createRoute` (request schemas that validate, response schemas that
 * describe), so the document cannot say something the routes do not do. This module adds only
 * what belongs to the whole API: its title, the bearer scheme, and the cache of the result.
 */
import type { OpenAPIHono } from '@hono/zod-openapi';

export type OpenApiDocument = ReturnType<OpenAPIHono['getOpenAPI31Document']>;

const INFO = {
  title: 'orch',
  version: '0.1.0',
  description:
    'orch runs AI coding agents on tasks through analysis → implementation → review → merge → deploy → done. ' +
    'Errors are JSON `{"error":{"code","message"}}`; mutating routes need `Authorization: Bearer $ORCH_API_TOKEN` when it is set.',
};

/**
 * The document of `app`, built on first use (after every route is mounted) and then kept: routes
 * do not change while the app serves.
 */
export function describeApi(app: OpenAPIHono): () => OpenApiDocument {
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'ORCH_API_TOKEN; required on mutating routes only when it is set',
  });
  let doc: OpenApiDocument | undefined;
  return () => (doc ??= app.getOpenAPI31Document({ openapi: '3.1.0', info: INFO }));
}
