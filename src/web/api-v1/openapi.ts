/**
 * The OpenAPI 3.1 document of /api/v1, made from the route table and the zod schemas the router validates with
 * (z.toJSONSchema, JSON Schema 2020-12: OpenAPI 3.1's dialect). Requests are described as the schemas accept them,
 * answers as they are sent.
 */
import { z } from 'zod';
import { SCOPES } from '../../core/index.js';
import type { V1Route } from './define.js';
import { ErrorBody } from './schemas.js';

type Json = Record<string, unknown>;

function jsonSchema(s: z.ZodType, io: 'input' | 'output'): Json {
  const out = z.toJSONSchema(s, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as Json;
  delete out.$schema;
  return out;
}

const ERROR_REF = { $ref: '#/components/schemas/Error' };
const errorAnswer = (description: string) => ({ description, content: { 'application/json': { schema: ERROR_REF } } });

/** `get /builds/{id}/artifacts/{name}` -> `getBuildsIdArtifactsName`. */
const operationId = (r: V1Route): string =>
  r.method +
  r.path
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');

function parameters(where: 'path' | 'query' | 'header', obj: z.ZodObject | undefined): Json[] {
  return Object.entries(obj?.shape ?? {}).map(([name, s]) => {
    const schema = jsonSchema(s as z.ZodType, 'input');
    const { description, ...rest } = schema;
    return {
      name,
      in: where,
      required: where === 'path' || !(s as z.ZodType).safeParse(undefined).success,
      ...(description ? { description } : {}),
      schema: rest,
    };
  });
}

function requestBody(r: V1Route): Json | undefined {
  if (!r.body) return undefined;
  const schema = jsonSchema(r.body.schema, 'input');
  if (r.body.kind === 'json') return { required: true, content: { 'application/json': { schema } } };
  if (r.body.kind === 'raw')
    return {
      required: true,
      content: {
        'application/json': { schema },
        'application/x-www-form-urlencoded': {
          schema: { type: 'object', properties: { payload: { type: 'string', description: 'The same JSON.' } } },
        },
      },
    };
  return {
    required: true,
    content: { 'multipart/form-data': { schema, encoding: { settings: { contentType: 'application/json' } } } },
  };
}

function responses(r: V1Route): Json {
  const out: Json = {};
  for (const [status, a] of Object.entries(r.responses)) {
    if (a.json === ErrorBody) out[status] = errorAnswer(a.description);
    else if (a.json)
      out[status] = {
        description: a.description,
        content: { 'application/json': { schema: jsonSchema(a.json, 'output') } },
      };
    else if (a.media === 'application/json')
      out[status] = { description: a.description, content: { [a.media]: { schema: { type: 'object' } } } };
    else
      out[status] = {
        description: a.description,
        content: { [a.media ?? 'application/octet-stream']: { schema: { type: 'string' } } },
      };
  }
  if (r.scope !== 'public') {
    out['401'] ??= errorAnswer(
      'No token, or a malformed, unknown, revoked or expired one, or its account cannot log in.',
    );
    out['403'] ??= errorAnswer(`The token's scopes do not cover this (it needs \`${r.scope}\`), or only an admin may.`);
    out['429'] ??= errorAnswer("Over the token's rate limit: wait Retry-After seconds.");
  }
  out.default = errorAnswer('Any other error (invalid input 422, too large 413, ...), always in this shape.');
  return out;
}

export function openApiDocument(table: readonly V1Route[], version: string): Json {
  const paths: Record<string, Json> = {};
  for (const r of table) {
    const body = requestBody(r);
    (paths[r.path] ??= {})[r.method] = {
      operationId: operationId(r),
      tags: [r.tag],
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      security: r.scope === 'public' ? [] : [{ token: r.scope === 'any' ? [] : [r.scope] }],
      'x-kiln-scope': r.scope,
      parameters: [
        ...parameters('path', r.params),
        ...parameters('query', r.query),
        ...parameters('header', r.headers),
      ],
      ...(body ? { requestBody: body } : {}),
      responses: responses(r),
    };
  }
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Kiln REST API',
      version,
      description:
        'Kiln as a step of a CI pipeline: put a Dockerfile with its build context and settings, build it, follow it, download and verify what it made. Authenticate with a personal API token (`Authorization: Bearer kiln_...`, made on the account page or by `kiln user token`); cookies are not read here. Every error is `{"error": {"code", "message", "details"?}}` with a stable `code`. Lists are paginated by an opaque cursor.',
    },
    servers: [{ url: '/api/v1' }],
    security: [{ token: [] }],
    components: {
      securitySchemes: {
        token: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'kiln_<16 hex>_<43 base64url>',
          description: `A personal API token. Scopes: ${SCOPES.join(', ')} (build and admin include read; admin only for admins).`,
        },
      },
      schemas: { Error: jsonSchema(ErrorBody, 'output') },
    },
    paths,
  };
}
