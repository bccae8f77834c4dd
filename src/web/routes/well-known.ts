import { Router } from 'express';
import type { AppContext } from '../app.js';
import { signingKey } from '../../core/index.js';

/** Public, no login: what a user needs to check a download on their side (`kiln verify --key-url`). */
export function wellKnownRoutes(ctx: AppContext): Router {
  const r = Router();
  r.get('/.well-known/kiln-signing-key', async (_req, res) => {
    const key = await signingKey(ctx.config);
    res.set({ 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
    res.send(`${key.publicKey}\n`);
  });
  return r;
}
