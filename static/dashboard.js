// Operators' dashboard: the picked stations' history, then their live stream.
//
// Protocol (README "Resume"): GET /api/notifications returns the newest rows plus the
// cursor they are valid at; the stream opened from that cursor continues with no gap and
// no repeat. Every stream event carries the cursor as its id; we keep the last one, so a
// reconnect (the browser's own, or ours after a hard failure) resumes exactly there.
// Plain JavaScript, no build step. All server data goes into the page via textContent.
(function () {
  'use strict';

  var body = document.body;
  var config = {
    historyUrl: body.dataset.historyUrl,
    streamUrl: body.dataset.streamUrl,
    historyLimit: Number(body.dataset.historyLimit) || 50,
    maxRows: Number(body.dataset.maxRows) || 500,
    maxStations: Number(body.dataset.maxStations) || 500,
    loginUrl: body.dataset.loginUrl || '',
  };
  var BACKOFF_MS = [1000, 2000, 4000, 8000, 10000];
  var ALERT_FAULT = /ERROR|FAULT/i;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    status: $('status'),
    cursor: $('cursor'),
    notice: $('notice'),
    feed: document.querySelector('#feed tbody'),
    feedEmpty: $('feed-empty'),
    rowCount: $('row-count'),
    filter: $('station-filter'),
    filterEmpty: $('filter-empty'),
    list: $('station-list'),
    selectedCount: $('selected-count'),
  };
  var boxes = Array.prototype.slice.call(ui.list.querySelectorAll('input[name=station]'));
  var stationNames = {};
  boxes.forEach(function (box) {
    var name = box.parentNode.querySelector('.name');
    stationNames[box.value] = name ? name.textContent : '';
  });

  // One "session" per selection. Answers and timers of an older selection check
  // `session !== conn.session` and drop themselves, so quick clicks never mix feeds.
  var conn = {
    session: 0,
    stations: [],
    source: null, // the EventSource
    lastId: null, // last stream id received (or the history cursor): where to resume
    attempt: 0, // consecutive failed reconnects, for the backoff
    retryTimer: null,
    aborts: [], // AbortControllers of in-flight history fetches
  };
  var seen = new Set(); // "STATION:SEQ" of the rows on screen

  // --- Status, cursor, notices ---------------------------------------------------

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function setCursor(cursor) {
    ui.cursor.textContent = 'cursor: ' + (cursor || '–');
    ui.cursor.title = cursor || '';
  }

  function showNotice(text, kind) {
    ui.notice.textContent = text;
    ui.notice.className = 'notice' + (kind ? ' notice-' + kind : '');
    ui.notice.hidden = !text;
  }

  // A problem retrying won't fix (signed out, access withdrawn, station deleted): say
  // so and stop, instead of reconnecting forever.
  function giveUp(message, status) {
    disconnect();
    setStatus('offline', 'offline');
    showNotice(message, 'error');
    if (status === 401 && config.loginUrl) {
      var link = document.createElement('a');
      link.href = config.loginUrl + '?next=' + encodeURIComponent(location.pathname + location.search);
      link.textContent = 'Sign in again';
      ui.notice.appendChild(document.createTextNode(' '));
      ui.notice.appendChild(link);
    }
  }

  // --- The feed --------------------------------------------------------------------

  function cell(row, text, className) {
    var td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function formatTime(date) {
    if (isNaN(date)) return '';
    var sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function buildRow(n, fresh) {
    var row = document.createElement('tr');
    var received = new Date(n.receivedAt);
    row.dataset.key = n.stationId + ':' + n.seq;
    row.dataset.station = n.stationId;
    row.dataset.id = n.id;
    row.dataset.time = String(received.getTime() || 0);
    if (ALERT_FAULT.test(n.faultType || '')) row.classList.add('alert');
    if (fresh) row.classList.add('fresh');

    var when = cell(row, formatTime(received), 'time');
    when.title = 'received ' + n.receivedAt + (n.timestamp ? '\ndevice time ' + n.timestamp : '');
    cell(row, n.stationId, 'code').title = stationNames[n.stationId] || '';
    cell(row, n.boxId, 'code');
    cell(row, n.connectorId, 'code');
    var fault = document.createElement('span');
    fault.className = 'fault';
    fault.textContent = n.faultType || '';
    cell(row, '').appendChild(fault);
    cell(row, n.action);
    cell(row, n.message, 'message');
    cell(row, n.code, 'code');
    return row;
  }

  // Rows are ordered by server receive time, newest first. Live events land on top;
  // the walk matters only when a history reload (stream-reset) merges older rows.
  function addNotification(n, fresh) {
    var key = n.stationId + ':' + n.seq;
    if (seen.has(key)) return; // already shown (history and stream may overlap)
    seen.add(key);
    var row = buildRow(n, fresh);
    var time = Number(row.dataset.time);
    var next = ui.feed.firstElementChild;
    // Live: go above rows of the same millisecond; history (given newest first): below.
    while (next && (fresh ? Number(next.dataset.time) > time : Number(next.dataset.time) >= time)) {
      next = next.nextElementSibling;
    }
    ui.feed.insertBefore(row, next);
    while (ui.feed.rows.length > config.maxRows) {
      removeRow(ui.feed.lastElementChild);
    }
  }

  function removeRow(row) {
    seen.delete(row.dataset.key);
    row.remove();
  }

  function clearFeed(stations) {
    Array.prototype.slice.call(ui.feed.rows).forEach(function (row) {
      if (!stations || stations.indexOf(row.dataset.station) !== -1) removeRow(row);
    });
  }

  function updateFeedInfo() {
    var count = ui.feed.rows.length;
    ui.feedEmpty.hidden = count > 0;
    if (!conn.stations.length) {
      ui.feedEmpty.textContent = 'Pick one or more stations to see their notifications.';
    } else {
      ui.feedEmpty.textContent = 'No notifications yet for the selected stations.';
    }
    ui.rowCount.textContent = count
      ? count + (count === 1 ? ' notification' : ' notifications') +
        (count >= config.maxRows ? ' (older ones dropped)' : '')
      : '';
  }

  // --- History ---------------------------------------------------------------------

  function stationQuery(stations) {
    return stations.map(function (code) { return 'station=' + encodeURIComponent(code); }).join('&');
  }

  // Resolves with {cursor, results}. Rejects with err.status and err.retry = false for
  // answers that retrying won't change (a 4xx: signed out, no access, station deleted).
  function fetchHistory(stations, limit) {
    var abort = new AbortController();
    conn.aborts.push(abort);
    var url = config.historyUrl + '?' + stationQuery(stations) + '&limit=' + limit;
    return fetch(url, {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
      signal: abort.signal,
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) return data;
        var err = new Error(data.message || 'HTTP ' + response.status);
        err.status = response.status;
        err.retry = response.status >= 500 || response.status === 429;
        throw err;
      });
    }).finally(function () {
      conn.aborts = conn.aborts.filter(function (a) { return a !== abort; });
    });
  }

  // --- Connection --------------------------------------------------------------------

  function disconnect() {
    conn.session += 1;
    if (conn.source) conn.source.close();
    conn.source = null;
    clearTimeout(conn.retryTimer);
    conn.aborts.forEach(function (a) { a.abort(); });
    conn.aborts = [];
    conn.attempt = 0;
    conn.lastId = null;
  }

  // Start over for the current selection: clear, load history, then stream from its cursor.
  function restart() {
    disconnect();
    clearFeed();
    showNotice('');
    conn.stations = selectedStations();
    setCursor(null);
    updateFeedInfo();
    if (!conn.stations.length) {
      setStatus('idle', 'no station selected');
      return;
    }
    if (conn.stations.length > config.maxStations) {
      setStatus('idle', 'too many stations');
      showNotice('Select at most ' + config.maxStations + ' stations.', 'warn');
      return;
    }
    connect(conn.session);
  }

  // First time: load the history, whose cursor the stream starts from. On a reconnect
  // we already have a cursor (the last id received) and the feed: the same request with
  // limit=1 only checks that the server is back and still lets us in. EventSource can't
  // tell a server that is down from a 401, and this can.
  function connect(session) {
    if (session !== conn.session) return;
    var resuming = conn.lastId !== null;
    if (!resuming) setStatus('connecting', 'connecting…');
    fetchHistory(conn.stations, resuming ? 1 : config.historyLimit).then(function (data) {
      if (session !== conn.session) return;
      if (!resuming) {
        // Newest first from the API; the stream will put anything newer above them.
        data.results.forEach(function (n) { addNotification(n, false); });
        updateFeedInfo();
        conn.lastId = data.cursor;
        setCursor(data.cursor);
      }
      openStream(session);
    }, function (err) {
      if (session !== conn.session || err.name === 'AbortError') return;
      if (err.retry === false) {
        giveUp('Could not load the notifications: ' + err.message, err.status);
        return;
      }
      retryLater(session);
    });
  }

  function openStream(session) {
    // EventSource cannot send headers, so the first connection passes the cursor as
    // ?lastEventId=. On its own reconnects the browser adds a Last-Event-ID header with
    // the newest id, which the server prefers over the (then stale) query parameter.
    var url = config.streamUrl + '?' + stationQuery(conn.stations) +
      '&lastEventId=' + encodeURIComponent(conn.lastId);
    var source = new EventSource(url); // same origin: the session cookie goes along
    conn.source = source;

    // null for a frame that isn't JSON: one bad frame must never stop the feed.
    function parse(event) {
      try {
        return JSON.parse(event.data);
      } catch (e) {
        return null;
      }
    }

    function current(event) {
      if (source !== conn.source || session !== conn.session) return false;
      // Every frame of ours has an id: stream-open carries the cursor before any event,
      // so even a connection that drops at once can resume from the right place.
      if (event.lastEventId) {
        conn.lastId = event.lastEventId;
        setCursor(conn.lastId);
      }
      return true;
    }

    source.addEventListener('stream-open', function (event) {
      if (!current(event)) return;
      conn.attempt = 0;
      setStatus('live', 'live');
      // Whatever went wrong before is over; a reset notice stays until the next change.
      if (ui.notice.classList.contains('notice-error')) showNotice('');
    });

    source.addEventListener('notification', function (event) {
      var n = current(event) && parse(event);
      if (!n) return;
      addNotification(n, true);
      updateFeedInfo();
    });

    source.addEventListener('stream-reset', function (event) {
      var data = current(event) && parse(event);
      if (!data) return;
      reloadStations(session, data.stations || [], data.reasons || {});
    });

    // The server ends a stream whose access was withdrawn; a reconnect would be refused.
    source.addEventListener('stream-error', function (event) {
      if (!current(event)) return;
      var data = parse(event) || {};
      var which = (data.stations || []).join(', ');
      giveUp('The server ended the stream' + (data.condition ? ' (' + data.condition + ')' : '') +
        (which ? ' for ' + which : '') + '. Change the selection or reload the page.');
    });

    source.addEventListener('error', function () {
      if (source !== conn.source || session !== conn.session) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser retries by itself (after the server's retry: hint) and sends
        // Last-Event-ID. That holds only while the server answers 200 text/event-stream.
        setStatus('reconnecting', 'reconnecting…');
        return;
      }
      // CLOSED: the browser gave up for good (e.g. a 502 from a proxy, or a restart
      // answered with an error). Reconnect ourselves from the last id, with backoff.
      source.close();
      conn.source = null;
      retryLater(session);
    });
  }

  function retryLater(session) {
    var delay = BACKOFF_MS[Math.min(conn.attempt, BACKOFF_MS.length - 1)];
    conn.attempt += 1;
    setStatus('offline', 'offline · retrying in ' + Math.round(delay / 1000) + ' s');
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(function () {
      conn.retryTimer = null;
      connect(session);
    }, delay);
  }

  // stream-reset: the log no longer covers our cursor for these stations (pruned, or a
  // database restored from an older backup). Their rows may be stale or incomplete:
  // drop them and load their history again. The stream itself continues live.
  function reloadStations(session, stations, reasons) {
    var names = stations.map(function (code) {
      return code + (reasons[code] ? ' (' + reasons[code] + ')' : '');
    });
    showNotice('The stream was reset for ' + names.join(', ') +
      '; their history was reloaded, and events in between may be missing.', 'warn');
    clearFeed(stations);
    updateFeedInfo();
    fetchHistory(stations, config.historyLimit).then(function (data) {
      if (session !== conn.session) return;
      data.results.forEach(function (n) { addNotification(n, false); });
      updateFeedInfo();
    }, function (err) {
      if (session !== conn.session || err.name === 'AbortError') return;
      showNotice('The stream was reset for ' + names.join(', ') +
        ' and their history could not be reloaded: ' + err.message, 'error');
    });
  }

  // --- Station picker ------------------------------------------------------------------

  function selectedStations() {
    return boxes.filter(function (box) { return box.checked; })
      .map(function (box) { return box.value; });
  }

  function onSelectionChanged() {
    var stations = selectedStations();
    ui.selectedCount.textContent = stations.length + ' of ' + boxes.length;
    // Keep the selection in the address, so a reload or a shared link shows this feed.
    var query = stationQuery(stations);
    history.replaceState(null, '', location.pathname + (query ? '?' + query : ''));
    // Debounced: ticking several boxes in a row opens one stream, not one per click.
    clearTimeout(onSelectionChanged.timer);
    onSelectionChanged.timer = setTimeout(restart, 300);
  }

  function applyFilter() {
    var words = ui.filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    Array.prototype.forEach.call(ui.list.children, function (item) {
      var text = item.dataset.search;
      if (text === undefined) return;
      var match = words.every(function (w) { return text.indexOf(w) !== -1; });
      item.hidden = !match;
      if (match) shown += 1;
    });
    ui.filterEmpty.hidden = shown > 0 || !boxes.length;
  }

  ui.list.addEventListener('change', onSelectionChanged);
  ui.filter.addEventListener('input', applyFilter);
  // Enter in the filter box would submit the no-JavaScript form: ignore it here.
  $('picker').addEventListener('submit', function (event) { event.preventDefault(); });
  $('select-shown').addEventListener('click', function () {
    boxes.forEach(function (box) {
      if (!box.closest('li').hidden) box.checked = true;
    });
    onSelectionChanged();
  });
  $('clear-selection').addEventListener('click', function () {
    boxes.forEach(function (box) { box.checked = false; });
    onSelectionChanged();
  });

  // Back online (laptop lid, Wi-Fi): don't sit out the rest of a backoff delay.
  window.addEventListener('online', function () {
    if (conn.retryTimer && !conn.source && conn.stations.length) {
      clearTimeout(conn.retryTimer);
      conn.retryTimer = null;
      connect(conn.session);
    }
  });

  restart();
})();
