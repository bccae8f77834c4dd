// Live build page: the build's event stream (Server-Sent Events) drives the log, the progress bar and the state.
// Log lines arrive as HTML the server made safe (text escaped first, ANSI colours as class names only); everything
// else is written as text (textContent), never as HTML.
(function () {
  'use strict';
  var main = document.getElementById('build');
  if (!main) return;
  var id = main.getAttribute('data-build-id');
  if (!/^[0-9]+$/.test(id || '')) return;
  var $ = function (x) { return document.getElementById(x); };
  var logEl = $('log');
  var stateEl = $('state');
  var reasonEl = $('reason');
  var requeuedEl = $('requeued');
  var requeueReasonEl = $('requeue-reason');
  var progressEl = $('progress');
  var stageEl = $('stage');
  var artifactsEl = $('artifacts');
  var shaEl = $('sha');
  var verifyingEl = $('verifying');
  var cancelEl = $('cancel');
  var finishedEl = $('finished');
  var startedEl = $('started');
  var queueEl = $('queue');
  var final = main.getAttribute('data-final') === 'true';
  var wasFinal = final;
  var MAX_LOG_LINES = 20000;
  var UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];

  function humanBytes(n) {
    if (n < 1024) return n + (n === 1 ? ' byte' : ' bytes');
    var u = 0;
    while (n >= 1024 && u < UNITS.length - 1) { n /= 1024; u++; }
    return (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)) + ' ' + UNITS[u];
  }
  function duration(s) {
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min' + (s % 60 ? ' ' + (s % 60) + ' s' : '');
    return Math.floor(s / 3600) + ' h' + (Math.floor((s % 3600) / 60) ? ' ' + Math.floor((s % 3600) / 60) + ' min' : '');
  }
  function time(t) { return t ? String(t).replace('T', ' ').slice(0, 19) : ''; }

  function showBuild(b) {
    stateEl.textContent = b.state === 'verifying' ? 'verifying artifacts' : b.state;
    stateEl.className = 'state state-' + String(b.state).replace(/[^a-z]/g, '');
    verifyingEl.hidden = b.state !== 'verifying';
    if (reasonEl) { reasonEl.hidden = !b.reason; reasonEl.textContent = b.reason || ''; }
    if (requeuedEl) {
      requeuedEl.hidden = !b.requeues;
      if (requeueReasonEl) requeueReasonEl.textContent = b.requeueReason || '';
    }
    if (b.progressView) {
      progressEl.value = Math.max(0, Math.min(100, Number(b.progressView.percent) || 0));
      stageEl.textContent = b.progressView.label;
    }
    if (b.artifacts && b.artifacts.length) {
      while (artifactsEl.firstChild) artifactsEl.removeChild(artifactsEl.firstChild);
      b.artifacts.forEach(function (a) {
        var li = document.createElement('li');
        var link = document.createElement('a');
        link.href = '/builds/' + encodeURIComponent(id) + '/artifacts/' + encodeURIComponent(a.name);
        link.setAttribute('download', '');
        link.textContent = a.name;
        var size = document.createElement('span');
        size.className = 'muted size';
        size.title = Number(a.size).toLocaleString('en-US') + ' bytes';
        size.textContent = humanBytes(Number(a.size));
        li.appendChild(link);
        li.appendChild(document.createTextNode(' '));
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
    if (finishedEl && b.finishedAt) finishedEl.textContent = time(b.finishedAt);
    if (startedEl && b.startedAt) startedEl.textContent = time(b.startedAt);
    if (b.state !== 'requested' && b.state !== 'queued' && queueEl) queueEl.hidden = true;
    // The report (boot tests, failure summary, documents) is rendered by the server: show it once the build ends.
    if (final && !wasFinal) { wasFinal = true; if (es) es.close(); window.location.reload(); }
  }

  function showQueue(q) {
    if (!queueEl) return;
    queueEl.hidden = !q;
    if (!q) return;
    var t = 'Waiting: number ' + q.position + ' of ' + q.waiting + ' in the queue';
    if (q.etaSeconds !== undefined) t += ', expected to start in about ' + duration(q.etaSeconds) + ' (builds here take about ' + duration(q.typicalSeconds) + ')';
    queueEl.textContent = t + '.';
  }

  var es = null;
  var lines = 0;
  function appendLines(html) {
    var atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
    var frag = document.createElement('div');
    for (var i = 0; i < html.length; i++) frag.insertAdjacentHTML('beforeend', html[i] + '\n');
    while (frag.firstChild) logEl.appendChild(frag.firstChild);
    lines += html.length;
    while (lines > MAX_LOG_LINES && logEl.firstChild) {
      // Trim from the top, a line at a time (text nodes end with a newline; spans hold whole pieces of a line).
      var n = logEl.firstChild;
      if (n.nodeType === 3 && n.nodeValue.indexOf('\n') >= 0) lines--;
      logEl.removeChild(n);
    }
    if (atBottom) logEl.scrollTop = logEl.scrollHeight;
  }

  // A long finished log starts at its tail; all of it is the build.log download.
  var TAIL_BYTES = 256 * 1024;
  var from = 0;
  var full = (function () {
    var items = artifactsEl.querySelectorAll('a');
    for (var i = 0; i < items.length; i++) if (items[i].textContent === 'build.log') return items[i].parentNode.querySelector('.size');
    return null;
  })();
  if (final && full) {
    var size = Number(String(full.title).replace(/[^0-9]/g, ''));
    if (size > TAIL_BYTES * 2) {
      // A position in the log of the build's current attempt (src/core/builds/log-position.ts): attempt * 2^44 + offset.
      from = Number(main.getAttribute('data-attempt') || 0) * Math.pow(2, 44) + size - TAIL_BYTES;
      logEl.appendChild(document.createTextNode('[earlier output not shown: download build.log for all of it]\n'));
    }
  }

  if (!window.EventSource) return;
  es = new EventSource('/api/builds/' + id + '/events' + (from ? '?from=' + from : ''));
  es.addEventListener('log', function (e) { appendLines(JSON.parse(e.data).html || []); });
  es.addEventListener('progress', function (e) {
    if (final) return; // a finished build shows how it ended, not the events of its replayed log
    var p = JSON.parse(e.data);
    progressEl.value = Math.max(0, Math.min(100, Number(p.percent) || 0));
    stageEl.textContent = p.stage + (p.message ? ': ' + p.message : '');
  });
  es.addEventListener('build', function (e) { showBuild(JSON.parse(e.data)); });
  es.addEventListener('end', function () { es.close(); });

  // The queue place changes as other builds start: asked for while this one waits.
  function pollQueue() {
    if (final) return;
    fetch('/api/builds/' + id, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (r) {
        if (!r) return;
        showQueue(r.build.queue);
        if (r.build.state === 'requested' || r.build.state === 'queued') setTimeout(pollQueue, 5000);
      })
      .catch(function () { setTimeout(pollQueue, 10000); });
  }
  if (!final) setTimeout(pollQueue, 5000);
})();
