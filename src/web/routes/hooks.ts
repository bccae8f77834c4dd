/**
 * `POST /api/v1/hooks/git`: push webhooks from Gitea, GitHub and GitLab (core.git.push), one route of the REST API's
 * table (so the OpenAPI document lists it) that takes no token: the delivery's signature authenticates it, over the
 * exact bytes received, so its body is read raw (`kind: 'raw'`, at most MAX_PUSH_BYTES, capped by Content-Length
 * before a byte is buffered, no content coding). Answers 202 with what was done; refusals are the API's error shape
 * (400 not a push payload, 401 not signed by a tracking Dockerfile's secret, 413 too large), never a 5xx for anything
 * a sender can put in a request.
 */
import { z } from 'zod';
import { MAX_PUSH_BYTES, type Core } from '../../core/index.js';
import { route, type V1Route } from '../api-v1/define.js';
import { ErrorBody } from '../api-v1/schemas.js';

const text = z.string().optional();
/** The headers the core reads, as the forges send them. */
const PushHeaders = z.object({
  'x-hub-signature-256': text.meta({ description: 'GitHub (and Gitea): `sha256=` + HMAC-SHA256 of the body, hex.' }),
  'x-gitea-signature': text.meta({ description: 'Gitea: HMAC-SHA256 of the body, hex.' }),
  'x-gogs-signature': text.meta({ description: 'Gogs: HMAC-SHA256 of the body, hex.' }),
  'x-gitlab-token': text.meta({ description: "GitLab: the webhook's secret token itself." }),
  'x-github-event': text,
  'x-gitea-event': text,
  'x-gogs-event': text,
  'x-gitlab-event': text,
});

const url = z.string().optional();
/** What Kiln reads of a push payload (the forges send much more; all of it is accepted and ignored). */
const PushPayload = z
  .looseObject({
    ref: z.string().optional().meta({ description: '`refs/heads/<branch>`; other refs are ignored.' }),
    before: z.string().optional(),
    after: z.string().optional().meta({ description: 'The commit the branch is at now (40 or 64 hex digits).' }),
    repository: z
      .looseObject({ clone_url: url, ssh_url: url, git_url: url, html_url: url, git_http_url: url, git_ssh_url: url })
      .optional(),
    project: z.looseObject({ git_http_url: url, git_ssh_url: url, web_url: url }).optional(),
  })
  .meta({ description: "A push event of Gitea, GitHub or GitLab (JSON, or GitHub's form encoding `payload=<JSON>`)." });

const PushAnswer = z.object({
  status: z.enum(['unknown', 'ignored', 'accepted']),
  reason: z.string().optional(),
  repository: z.string().optional(),
  branch: z.string().optional(),
  commit: z.string().optional(),
  dockerfiles: z.array(
    z.object({
      dockerfile: z.number().int(),
      outcome: z.enum(['build', 'seen', 'baseline', 'refused']),
      build: z.number().int().optional(),
      created: z.boolean().optional(),
      message: z.string().optional(),
    }),
  ),
});

export function hookRoute(core: Core): V1Route {
  return route({
    method: 'post',
    path: '/hooks/git',
    tag: 'git',
    summary: "A push webhook of Gitea, GitHub or GitLab (signed with a Dockerfile's secret; no token)",
    description:
      'Each Dockerfile that tracks the pushed repository and branch, follows it, and whose secret (shown on its page) signed the delivery gets one build of the pushed commit; a redelivery changes nothing.',
    scope: 'public',
    headers: PushHeaders,
    body: { kind: 'raw', schema: PushPayload, maxBytes: MAX_PUSH_BYTES },
    responses: {
      202: {
        description: 'Accepted: what was done (`unknown`: no Dockerfile tracks the repository).',
        json: PushAnswer,
      },
      400: { description: 'Not a push payload.', json: ErrorBody },
      401: { description: 'Not signed with the secret of a Dockerfile tracking the repository.', json: ErrorBody },
      413: { description: 'Larger than 1 MiB.', json: ErrorBody },
    },
    handle: async ({ req, res, headers }) => {
      const result = await core.git.push({
        body: Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0),
        contentType: req.get('content-type'),
        headers: headers ?? {},
      });
      res.status(202).json(result);
    },
  });
}
