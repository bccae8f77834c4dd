// Live build page: polls the JSON API and writes only text (textContent / text nodes), never HTML.
(function () {
  'use strict';
  var main = document.getElementById('build');
  if (!main) return;
  var id = main.getAttribute('data-build-id');
  if (!/^[0-9]+$/.test(id || '')) return;
  var logEl = document.getElementById('log');
  var stateEl = document.getElementById('state');
  var reasonEl = document.getElementById('reason');
  var requeuedEl = document.getElementById('requeued');
  var requeueReasonEl = document.getElementById('requeue-reason');
  var progressEl = document.getElementById('progress');
  var stageEl = document.getElementById('stage');
  var artifactsEl = document.getElementById('artifacts');
  var shaEl = document.getElementById('sha');
  var verifyingEl = document.getElementById('verifying');
  var cancelEl = document.getElementById('cancel');
  var finishedEl = document.getElementById('finished');
  var offset = 0;
  var final = main.getAttribute('data-final') === 'true';
  var MAX_LOG_CHARS = 512 * 1024;

  function getJson(url) {
    return fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    });
  }

  function showBuild(b) {
    stateEl.textContent = b.state === 'verifying' ? 'verifying artifacts' : b.state;
    verifyingEl.hidden = b.state !== 'verifying';
    stateEl.className = 'state state-' + String(b.state).replace(/[^a-z]/g, '');
    reasonEl.hidden = !b.reason;
    reasonEl.textContent = b.reason || '';
    if (requeuedEl) {
      requeuedEl.hidden = !b.requeues;
      if (requeueReasonEl) requeueReasonEl.textContent = b.requeueReason || '';
    }
    if (b.progress) {
      progressEl.value = Math.max(0, Math.min(100, Number(b.progress.percent) || 0));
      stageEl.textContent = b.progress.stage + (b.progress.message ? ': ' + b.progress.message : '');
    }
    if (b.state === 'succeeded') progressEl.value = 100;
    if (b.artifacts && b.artifacts.length) {
      while (artifactsEl.firstChild) artifactsEl.removeChild(artifactsEl.firstChild);
      b.artifacts.forEach(function (a) {
        var li = document.createElement('li');
        var link = document.createElement('a');
        link.href = '/builds/' + encodeURIComponent(id) + '/artifacts/' + encodeURIComponent(a.name);
        link.setAttribute('download', '');
        link.textContent = a.name;
        var size = document.createElement('span');
        size.className = 'muted';
        size.textContent = ' ' + a.size + ' bytes';
        li.appendChild(link);
        li.appendChild(size);
        if (a.sha256) {
          var sha = document.createElement('code');
          sha.className = 'sha';
          sha.textContent = 'sha256 ' + a.sha256;
          li.appendChild(document.createTextNode(' '));
          li.appendChild(sha);
        }
        artifactsEl.appendChild(li);
      });
    }
    if (b.imageSha256) {
      shaEl.hidden = false;
      shaEl.querySelector('code').textContent = b.imageSha256;
    }
    final = !!b.final;
    if (cancelEl) cancelEl.hidden = final || b.state === 'verifying';
    if (finishedEl && b.finishedAt) finishedEl.textContent = String(b.finishedAt).replace('T', ' ').slice(0, 19);
  }

  function pollLog() {
    return getJson('/api/builds/' + id + '/log?offset=' + offset).then(function (c) {
      if (c.text) {
        var atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
        logEl.appendChild(document.createTextNode(c.text));
        if (logEl.textContent.length > MAX_LOG_CHARS) {
          logEl.textContent = '[earlier output trimmed]\n' + logEl.textContent.slice(-MAX_LOG_CHARS);
        }
        if (atBottom) logEl.scrollTop = logEl.scrollHeight;
      }
      offset = c.nextOffset;
      return c.more;
    });
  }

  var TAIL_BYTES = 256 * 1024;
  var started = false;
  // A long finished log starts at its tail; the full log is the build.log download.
  function startAt(b) {
    if (started) return;
    started = true;
    var full = (b.artifacts || []).filter(function (a) { return a.name === 'build.log'; })[0];
    if (full && full.size > TAIL_BYTES * 2) {
      offset = full.size - TAIL_BYTES;
      logEl.appendChild(document.createTextNode('[earlier output not shown: download build.log for all of it]\n'));
    }
  }

  function tick() {
    var gotFullChunk = false;
    getJson('/api/builds/' + id)
      .then(function (r) { showBuild(r.build); startAt(r.build); var before = offset; return pollLog().then(function (more) { gotFullChunk = offset - before >= 200 * 1024; return more; }); })
      .then(function (more) {
        if (gotFullChunk) setTimeout(tick, 50);
        else if (!final || more) setTimeout(tick, 2000);
      })
      .catch(function () { setTimeout(tick, 5000); });
  }
  tick();
})();
