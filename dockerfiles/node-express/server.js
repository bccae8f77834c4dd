'use strict';
// A small Express service: /healthz for the orchestrator's probe, / for users.
const http = require('http');
const express = require('express');

const app = express();
const port = Number(process.env.PORT || 3000);

app.get('/healthz', (_req, res) => res.type('text').send('ok'));
app.get('/', (_req, res) => res.json({ service: 'node-express', env: app.get('env') }));

app.listen(port, '0.0.0.0', () => {
  console.log(`node-express: listening on :${port}`);
  http.get(`http://127.0.0.1:${port}/healthz`, (res) => {
    let body = '';
    res.on('data', (c) => { body += c; });
    res.on('end', () => console.log(`KILN-COMPAT-OK node-express: GET /healthz ${res.statusCode} ${body} (NODE_ENV=${app.get('env')})`));
  }).on('error', (e) => console.error(`node-express: self-check failed: ${e.message}`));
});
