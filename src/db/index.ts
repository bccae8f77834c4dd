export * from './knex.js';
export { migrateLatest, migrationSource } from './migrations/index.js';
export * from './users.js';
export * from './settings.js';
export * from './login-failures.js';
export * from './dockerfiles.js';
export * from './contexts.js';
export * from './builds.js';
export * from './quotas.js';
