'use strict';
// Uses the dependency npm ci installed from the registry; stays up like a service would.
const ms = require('ms');

console.log(`KILN-COMPAT-OK node-npm-ci: ms('2 days') = ${ms('2 days')}`);
setInterval(() => {}, 60 * 60 * 1000);
