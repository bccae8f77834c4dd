/**
 * Standalone Jenkins double: `npm run jenkins-double -- --port 8081 [--data DIR] [--user NAME:TOKEN] [--quiet 5]
 * [--executors 2] [--label kiln-builder --node builder-1] [--jenkins-version 2.568.2] [--admin NAME]`.
 * Users given as NAME:TOKEN authenticate with an API token (no crumb needed); NAME:TOKEN:PASSWORD adds a password
 * login that needs crumbs, like real Jenkins.
 */
import { parseArgs } from 'node:util';
import { startJenkinsDouble, type DoubleUser } from './index.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8081' },
    host: { type: 'string', default: '127.0.0.1' },
    data: { type: 'string' },
    user: { type: 'string', multiple: true, default: ['kiln:kiln-token'] },
    quiet: { type: 'string', default: '5' },
    executors: { type: 'string', default: '2' },
    label: { type: 'string', multiple: true },
    node: { type: 'string' },
    'jenkins-version': { type: 'string' },
    admin: { type: 'string', multiple: true, default: [] },
  },
});
const users: DoubleUser[] = values.user.map((u) => {
  const [name, token, password] = u.split(':');
  return { name: name!, token, password, admin: values.admin.includes(name!) };
});
const d = await startJenkinsDouble({
  port: Number(values.port),
  host: values.host,
  dataDir: values.data,
  users,
  quietPeriodSeconds: Number(values.quiet),
  executors: Number(values.executors),
  labels: values.label,
  nodeName: values.node,
  version: values['jenkins-version'],
});
process.stdout.write(
  `Jenkins double listening on ${d.url} (data: ${d.dataDir}; users: ${users.map((u) => u.name).join(', ')})\n`,
);
const shutdown = () => {
  void d.stop().then(() => process.exit(0));
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
