/**
 * What a REST API route is: one entry of the route table (routes.ts) that both the Express router (router.ts) and
 * the OpenAPI document (openapi.ts) are made from. Its schemas validate the request before the handler runs; the
 * handler turns the checked input into one use case call of the core and answers.
 */
import type { Request, Response } from 'express';
import type { z } from 'zod';
import type { Scope, UserActor } from '../../core/index.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** `json` names a response schema; `media` a body of another type (a download, a stream). */
export type Responses = Record<number, { description: string; json?: z.ZodType; media?: string }>;

export interface Call<P, Q, H, B> {
  req: Request;
  res: Response;
  /** The token's user (every route but the public ones). */
  actor: UserActor;
  params: P;
  query: Q;
  headers: H;
  body: B;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

type Obj = z.ZodObject;
type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteDef<P extends Obj | undefined, Q extends Obj | undefined, H extends Obj | undefined, B> {
  method: Method;
  /** OpenAPI form, below /api/v1: `/builds/{id}`. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  /** The scope a token needs (`any`: any valid token; `public`: no token at all). */
  scope: Scope | 'any' | 'public';
  params?: P;
  query?: Q;
  /** Request headers the route reads (documented as header parameters; validated like the rest). */
  headers?: H;
  /**
   * `raw`: the exact bytes, at most `maxBytes` (a signed webhook: the signature covers them); `schema` then only
   * documents them, and the handler reads `req.body` (a Buffer).
   */
  body?: { kind: 'json' | 'multipart' | 'raw'; schema: z.ZodType<B>; maxBytes?: number };
  responses: Responses;
  handle: (c: Call<Out<P>, Out<Q>, Out<H>, B>) => Promise<void>;
}

/** A route of the table, its types erased (what the router and the document generator walk). */
export type V1Route = Omit<RouteDef<Obj, Obj, Obj, unknown>, 'handle'> & {
  handle: (c: Call<unknown, unknown, unknown, unknown>) => Promise<void>;
};

/** Declares a route with its handler typed by its schemas. */
export function route<
  P extends Obj | undefined = undefined,
  Q extends Obj | undefined = undefined,
  H extends Obj | undefined = undefined,
  B = undefined,
>(def: RouteDef<P, Q, H, B>): V1Route {
  return def as unknown as V1Route;
}

/** `/builds/{id}` -> `/builds/:id` (Express). */
export const expressPath = (p: string): string => p.replace(/\{(\w+)\}/g, ':$1');
