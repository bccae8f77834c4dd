/** Every kind of task the worker runs, by name (src/core/README.md lists what each does). */
import { jobControlTask } from '../admin.js';
import { attestTask } from '../builds/attest.js';
import { dispatchTask, withdrawTask } from '../builds/dispatch.js';
import { cancelTask, refreshTask } from '../builds/refresh.js';
import { deleteTask, syncTask } from '../jobs/tasks.js';
import { buildFetchTask, gitFetchTask, gitPollTask } from '../git/tasks.js';
import { releaseTask } from '../releases.js';
import { discardTask, keepTask, retentionTask } from '../retention.js';
import { notifyTask } from '../following/notify.js';
import { deliverTask } from '../following/webhooks.js';
import { reconcileTask } from './reconcile.js';
import type { TaskKindName } from './queue.js';
import type { TaskKind } from './worker.js';

export const TASK_HANDLERS: Readonly<Record<TaskKindName, TaskKind>> = {
  'build.dispatch': dispatchTask,
  'build.refresh': refreshTask,
  'build.cancel': cancelTask,
  'build.attest': attestTask,
  'build.withdraw': withdrawTask,
  'job.sync': syncTask,
  'dockerfile.delete': deleteTask,
  reconcile: reconcileTask,
  'job.control': jobControlTask,
  'build.fetch': buildFetchTask,
  'git.fetch': gitFetchTask,
  'git.poll': gitPollTask,
  'release.make': releaseTask,
  retention: retentionTask,
  'build.discard': discardTask,
  'build.keep': keepTask,
  'build.notify': notifyTask,
  'webhook.deliver': deliverTask,
};
