import type { Request, Response } from 'express';
import { tokenState } from '../../core/index.js';
import type { AppContext } from '../app.js';
import { actorOf } from './util.js';

const KEY_NOTICES: Record<string, string> = {
  added: 'SSH key added.',
  deleted: 'SSH key deleted: it no longer opens Kiln.',
};

/**
 * Renders the account page: the password form, the user's API tokens and SSH keys (with how to use the SSH door),
 * and whatever `extra` a route adds (a just-made token, a form's error and its text).
 */
export async function renderAccount(
  ctx: AppContext,
  req: Request,
  res: Response,
  extra: Record<string, unknown> = {},
  status = 200,
): Promise<void> {
  const actor = actorOf(req);
  const at = ctx.now();
  const tokens = (await ctx.core.tokens.list(actor)).map((t) => ({
    id: t.id,
    name: t.name,
    scopes: t.scopes,
    createdAt: t.created_at,
    expiresAt: t.expires_at,
    lastUsedAt: t.last_used_at,
    state: tokenState(t, at),
    revokedReason: t.revoked_reason,
  }));
  const door = ctx.config.sshDoor;
  const host = ctx.config.web.publicUrl ? new URL(ctx.config.web.publicUrl).hostname : 'HOST';
  ctx.render(
    req,
    res,
    'account.njk',
    {
      tokens,
      sshKeys: await ctx.core.sshKeys.list(actor),
      sshCommand: `ssh${door.port === 22 ? '' : ` -p ${door.port}`} ${door.user}@${host}`,
      sshDoorEnabled: door.enabled,
      feedToken: await ctx.core.following.feedToken(actor),
      feedBase: ctx.config.web.publicUrl?.replace(/\/+$/, '') ?? `${req.protocol}://${req.get('host') ?? ''}`,
      keyNotice: typeof req.query.key === 'string' ? KEY_NOTICES[req.query.key] : undefined,
      ...extra,
    },
    status,
  );
}
