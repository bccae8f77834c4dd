/**
 * The REST API, /api/v1: personal API tokens in, the core's use cases behind, one route table (routes.ts) making
 * both the router and the OpenAPI document (GET /api/v1/openapi.json). See src/web/README.md, "REST API v1".
 */
import type { Router } from 'express';
import { KILN_VERSION } from '../../shared/version.js';
import type { AppContext } from '../app.js';
import type { V1Route } from './define.js';
import { openApiDocument } from './openapi.js';
import { v1Router } from './router.js';
import { v1Routes } from './routes.js';

export type { V1Route } from './define.js';

export function apiV1(ctx: AppContext): { router: Router; table: V1Route[] } {
  let doc: Record<string, unknown> | undefined;
  const table: V1Route[] = v1Routes(ctx, () => (doc ??= openApiDocument(table, KILN_VERSION)));
  return { router: v1Router(ctx, table), table };
}
