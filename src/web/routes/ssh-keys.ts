import { Router, type Request, type Response } from 'express';
import { isKilnError } from '../../shared/errors.js';
import type { AppContext } from '../app.js';
import { renderAccount } from './account-page.js';
import { actorOf, requireUser } from './util.js';

/** The account page's SSH keys: add one (pasted .pub line, optional name), delete one. Forms carry the CSRF token. */
export function sshKeyRoutes(ctx: AppContext): Router {
  const { core, logger } = ctx;
  const r = Router();

  r.post('/account/ssh-keys', requireUser, async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      await core.sshKeys.add(actorOf(req), { key: body.key, name: body.name });
      res.redirect(303, '/account?key=added');
    } catch (e) {
      if (!isKilnError(e) || !['invalid_input', 'bad_request', 'conflict'].includes(e.code)) throw e;
      const text = typeof body.key === 'string' ? body.key : '';
      logger.info({ user: actorOf(req).id, why: e.message.slice(0, 80) }, 'ssh key refused');
      await renderAccount(
        ctx,
        req,
        res,
        {
          keyError: e.message,
          // A pasted private key is never sent back (nor kept anywhere); anything else is, to be fixed.
          keyText: /PRIVATE KEY/.test(text) ? '' : text.slice(0, 16 * 1024),
          keyName: typeof body.name === 'string' ? body.name.slice(0, 200) : '',
        },
        e.httpStatus,
      );
    }
  });

  r.post('/account/ssh-keys/:id/delete', requireUser, async (req: Request, res: Response) => {
    await core.sshKeys.remove(actorOf(req), req.params.id);
    res.redirect(303, '/account?key=deleted');
  });

  return r;
}
