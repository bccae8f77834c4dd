/**
 * The one permission policy (src/core/policy.ts) as a table: who may take which action on whose object. The web's
 * authorization matrix (test/web/authz-matrix.test.ts) checks the same rules over every HTTP route.
 */
import { describe, expect, it } from 'vitest';
import { ANONYMOUS, CLI, WORKER, userActor } from '../../src/core/actor.js';
import { authorize, decide, ownerScope, requireUser, type Action } from '../../src/core/policy.js';

const alice = userActor({ id: 1, username: 'alice', role: 'user' });
const root = userActor({ id: 9, username: 'root', role: 'admin' });

describe('permission policy', () => {
  it('case 12, case 13: owners act on their own objects, others find nothing there, admins act on all; admin actions are 403 for users, 401 for visitors', () => {
    const owned: Action[] = ['dockerfile.read', 'dockerfile.update', 'build.request', 'build.read', 'build.cancel'];
    for (const a of owned) {
      expect(decide(alice, a, 1), a).toBe('allow');
      expect(decide(alice, a, 2), a).toBe('hidden');
      expect(decide(root, a, 2), a).toBe('allow');
      expect(decide(ANONYMOUS, a, 1), a).toBe('unauthenticated');
      expect(decide(WORKER, a, 1), a).toBe('allow');
    }
    for (const a of [
      'user.create',
      'user.list',
      'user.disable',
      'user.setRole',
      'user.resetPassword',
      'settings.manage',
    ] as Action[]) {
      expect(decide(alice, a), a).toBe('forbidden');
      expect(decide(root, a), a).toBe('allow');
      expect(decide(CLI, a), a).toBe('allow');
      expect(decide(ANONYMOUS, a), a).toBe('unauthenticated');
    }
    expect(() => authorize(alice, 'build.read', 2, 'No such build')).toThrow(
      expect.objectContaining({ code: 'not_found', message: 'No such build' }),
    );
    expect(() => authorize(alice, 'settings.manage')).toThrow(
      expect.objectContaining({ code: 'forbidden', message: 'Only an admin can do this.' }),
    );
    expect(() => authorize(ANONYMOUS, 'dockerfile.list')).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
  });

  it('visitors may register and log in; what needs a user (a password, a new Dockerfile) is refused to the system', () => {
    expect(decide(ANONYMOUS, 'user.register')).toBe('allow');
    expect(decide(ANONYMOUS, 'user.login')).toBe('allow');
    expect(decide(CLI, 'dockerfile.create')).toBe('forbidden');
    expect(decide(WORKER, 'account.changePassword')).toBe('forbidden');
    expect(() => requireUser(CLI)).toThrow(expect.objectContaining({ code: 'forbidden' }));
    expect(requireUser(alice)).toBe(alice);
  });

  it('listings are scoped: a user to their own, admins and the system to every owner, visitors to nothing', () => {
    expect(ownerScope(alice)).toBe(1);
    expect(ownerScope(root)).toBeNull();
    expect(ownerScope(WORKER)).toBeNull();
    expect(() => ownerScope(ANONYMOUS)).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
  });
});
