/** `GET /openapi.json` and `GET /docs`: the API described by itself. */
import { createRoute, z } from '@hono/zod-openapi';
import type { OpenApiDocument } from '../openapi.ts';
import { json, router } from '../router.ts';

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);

interface Operation {
  summary?: string;
  description?: string;
  security?: unknown[];
  requestBody?: { content: Record<string, { schema: { $ref?: string } }> };
  responses: Record<string, { description: string }>;
}

/** A plain reference page rendered from the OpenAPI document (no external assets). */
function docsPage(doc: OpenApiDocument): string {
  const paths = doc.paths as Record<string, Record<string, Operation>>;
  const schemas = (doc.components as { schemas: Record<string, unknown> }).schemas;
  const rows = Object.entries(paths).flatMap(([p, ops]) =>
    Object.entries(ops).map(([method, op]) => {
      const bodyRef = op.requestBody?.content['application/json']?.schema.$ref;
      const bodyName = bodyRef?.split('/').pop();
      const body = bodyName
        ? `<details><summary>body: ${escapeHtml(bodyName)}</summary><pre>${escapeHtml(JSON.stringify(schemas[bodyName], null, 2))}</pre></details>`
        : '';
      const responses = Object.entries(op.responses)
        .map(([code, r]) => `<li><code>${escapeHtml(code)}</code> ${escapeHtml(r.description)}</li>`)
        .join('');
      return `<section>
  <h2><span class="m ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(p)}</code>${op.security ? ' <span class="lock" title="bearer token when ORCH_API_TOKEN is set">needs token</span>' : ''}</h2>
  <p>${escapeHtml(op.summary ?? '')}</p>${op.description ? `\n  <p class="d">${escapeHtml(op.description)}</p>` : ''}
  ${body}
  <ul>${responses}</ul>
</section>`;
    }),
  );
  const info = doc.info as { title: string; version: string; description: string };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(info.title)} API reference</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d232b;background:#fafbfc}
h1{font-size:1.6rem}h2{font-size:1.05rem;margin:0 0 .3rem}section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}
.m{display:inline-block;min-width:3.6rem;text-align:center;border-radius:4px;padding:0 .3rem;color:#fff;font-size:.8rem}
.get{background:#2f7d4f}.post{background:#2456a6}.lock{font-size:.8rem;color:#8a5a00}.d{color:#555}
pre{background:#f3f5f7;padding:.6rem;border-radius:6px;overflow:auto;font-size:.8rem}ul{margin:.3rem 0;padding-left:1.2rem}
</style></head><body>
<h1>${escapeHtml(info.title)} API <small>${escapeHtml(info.version)}</small></h1>
<p>${escapeHtml(info.description)}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI ${escapeHtml(String(doc.openapi))}) · <a href="/">dashboard</a></p>
${rows.join('\n')}
</body></html>
`;
}

const openapiJson = createRoute({
  method: 'get',
  path: '/openapi.json',
  summary: 'This document',
  responses: { 200: json(z.record(z.string(), z.unknown()), 'OpenAPI 3.1') },
});

const docs = createRoute({
  method: 'get',
  path: '/docs',
  summary: 'API reference (HTML)',
  responses: { 200: { description: 'this document as a page', content: { 'text/html': { schema: z.string() } } } },
});

/** `document` is the whole app's, built once every route is mounted (see openapi.ts). */
export function docsRoutes(document: () => OpenApiDocument) {
  let page: string | undefined;
  return router()
    .openapi(openapiJson, (c) => c.json(document() as unknown as Record<string, unknown>, 200))
    .openapi(docs, (c) => c.html((page ??= docsPage(document())), 200));
}
