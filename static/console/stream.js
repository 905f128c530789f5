// The connection: snapshot plus cursor, then the stations' stream, resumed exactly.
//
// Protocol (README "Resume", docs/FAULTS.md "Snapshot plus cursor"): GET /api/state
// answers the stations' connectors, boxes and unresolved faults with the cursor they are
// valid at; the stream opened with lastEventId=<cursor> continues with no gap and no
// repeat. Every frame's id is the stream's cursor; we keep the last one, so a reconnect
// (the browser's own, with Last-Event-ID, or ours after a hard failure) resumes there.
//
// This file only talks to the server. What the frames mean for the page is the
// handlers' business (console.js): snapshot, notification, status, fault, connection.
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var t = CGM.t;
  var BACKOFF_MS = [1000, 2000, 4000, 8000, 10000];
  // Reconnecting for this long means the operator must be told the data may be stale:
  // a short blip (a proxy restart) stays quiet, a real outage does not.
  var STALE_AFTER_MS = 4000;
  // The stream asks for a heartbeat every config.heartbeatSeconds. A connection that
  // stalls without closing (a NAT or proxy timeout, a laptop's sleep) never fires
  // EventSource's `error`: no frame for this many intervals means it is gone.
  var SILENT_INTERVALS = 2.5;

  function stationQuery(stations) {
    return stations.map(function (code) { return 'station=' + encodeURIComponent(code); }).join('&');
  }

  // "ST001:4,ST002:9" -> {ST001: 4, ST002: 9}
  function parseCursor(cursor) {
    var positions = {};
    String(cursor || '').split(',').forEach(function (part) {
      var at = part.lastIndexOf(':');
      if (at > 0) positions[part.slice(0, at)] = Number(part.slice(at + 1));
    });
    return positions;
  }

  // A code the server sent (a reset reason, a stream-error condition) in the operator's
  // words; one this page does not know yet, as it came.
  function describe(prefix, code) {
    var key = prefix + String(code).replace(/-/g, '_');
    var text = t(key);
    return text === key ? String(code) : text;
  }

  // Resolves with the JSON body. Rejects with err.status and err.retry = false for
  // answers that retrying won't change (a 4xx: signed out, no access, station deleted).
  function getJSON(url, signal) {
    return fetch(url, {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
      signal: signal,
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) return data;
        var err = new Error(data.message || t('http_status', { status: response.status }));
        err.status = response.status;
        err.retry = response.status >= 500 || response.status === 429;
        throw err;
      });
    });
  }

  function Stream(config, handlers) {
    this.config = config;
    this.on = handlers;
    this.session = 0; // one per selection: answers of an older one drop themselves
    this.stations = [];
    this.source = null;
    this.lastId = null; // last frame id received (or the snapshot's cursor)
    this.applied = {}; // station -> seq already on the page (snapshot or frame)
    this.attempt = 0;
    this.retryTimer = null;
    this.watchdog = null;
    this.staleTimer = null;
    this.stale = false;
    this.lostAt = null;
    this.aborts = [];
    this.ended = false; // signed out or refused: no more reconnecting
  }

  Stream.prototype.fetch = function (url) {
    var abort = new AbortController();
    var self = this;
    this.aborts.push(abort);
    return getJSON(url, abort.signal).finally(function () {
      self.aborts = self.aborts.filter(function (a) { return a !== abort; });
    });
  };

  Stream.prototype.loadState = function (stations) {
    var self = this;
    var state = this.fetch(this.config.stateUrl + '?' + stationQuery(stations));
    // The log's recent rows: read after the state, so rows up to the state's cursor are
    // in it; rows after it come again from the stream and the feed drops the repeats.
    return state.then(function (snapshot) {
      return self.fetch(self.config.historyUrl + '?' + stationQuery(stations) +
        '&limit=' + self.config.historyLimit).then(function (history) {
        return { snapshot: snapshot, history: history.results || [] };
      });
    });
  };

  Stream.prototype.stop = function () {
    this.session += 1;
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.watchdog);
    this.watchdog = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.aborts.forEach(function (a) { a.abort(); });
    this.aborts = [];
    this.attempt = 0;
    this.lastId = null;
    this.applied = {};
    this.setFresh();
  };

  Stream.prototype.start = function (stations) {
    this.stop();
    this.ended = false;
    this.stations = stations.slice();
    this.connect(this.session);
  };

  Stream.prototype.setStatus = function (state, text) {
    this.on.connection(state, text, this.lastId);
  };

  // First time: load the snapshot, whose cursor the stream starts from. On a reconnect
  // we already have a cursor and the page: the log request with limit=1 only checks that
  // the server is back and still lets us in. EventSource can't tell a server that is
  // down from a 401, and this can.
  Stream.prototype.connect = function (session) {
    var self = this;
    if (session !== this.session) return;
    var resuming = this.lastId !== null;
    if (!resuming) this.setStatus('connecting', t('status_connecting'));
    var ready = resuming
      ? this.fetch(this.config.historyUrl + '?' + stationQuery(this.stations) + '&limit=1')
      : this.loadState(this.stations);
    ready.then(function (loaded) {
      if (session !== self.session) return;
      if (!resuming) {
        self.lastId = loaded.snapshot.cursor;
        self.applied = parseCursor(loaded.snapshot.cursor);
        self.on.snapshot(self.stations, loaded.snapshot, loaded.history);
        self.setStatus('connecting', t('status_connecting'));
      }
      self.openStream(session);
    }, function (err) {
      if (session !== self.session || err.name === 'AbortError') return;
      if (err.status === 401) return self.signedOut();
      if (err.retry === false) {
        self.end(t('load_failed', { message: err.message }));
        return;
      }
      self.retryLater(session);
    });
  };

  // Is this frame new to the page? Snapshot and stream overlap exactly at the cursor, and
  // the browser's own reconnect may deliver again what the page already has: a frame
  // whose seq its station already has is skipped, so nothing is applied twice.
  Stream.prototype.isNew = function (station, cursor) {
    var seq = parseCursor(cursor)[station];
    if (seq === undefined) return true;
    if (this.applied[station] !== undefined && seq <= this.applied[station]) return false;
    this.applied[station] = seq;
    return true;
  };

  Stream.prototype.openStream = function (session) {
    var self = this;
    // EventSource cannot send headers, so the first connection passes the cursor as
    // ?lastEventId=. On its own reconnects the browser adds a Last-Event-ID header with
    // the newest id, which the server prefers over the (then stale) query parameter.
    // heartbeat=1: idle periods bring `heartbeat` events (no id), which the watchdog
    // below sees, instead of comment lines, which EventSource hides.
    var url = this.config.streamUrl + '?' + stationQuery(this.stations) +
      '&lastEventId=' + encodeURIComponent(this.lastId) + '&heartbeat=1';
    var source = new EventSource(url); // same origin: the session cookie goes along
    this.source = source;
    var silentMs = SILENT_INTERVALS * this.config.heartbeatSeconds * 1000;
    // A server that sends heartbeats sends one right after stream-open. One that opened
    // the stream and sent none (one that ignores heartbeat=1) can't be judged by its silence.
    var heard = { open: false, heartbeat: false };

    // Any frame proves the connection alive; silence past silentMs means it stalled.
    // Also armed while the browser reconnects by itself: that attempt may stall too.
    function watch() {
      clearTimeout(self.watchdog);
      self.watchdog = setTimeout(function () {
        if (source !== self.source || session !== self.session) return;
        self.watchdog = null;
        if (heard.open && !heard.heartbeat) return;
        source.close();
        self.source = null;
        self.lost();
        self.retryLater(session);
      }, silentMs);
    }
    watch();

    // null for a frame that isn't JSON: one bad frame must never stop the console.
    function parse(event) {
      try {
        return JSON.parse(event.data);
      } catch (e) {
        return null;
      }
    }

    function current(event) {
      if (source !== self.source || session !== self.session) return false;
      watch();
      // Every frame of ours has an id: stream-open carries the cursor before any event,
      // so even a connection that drops at once can resume from the right place.
      if (event.lastEventId) self.lastId = event.lastEventId;
      return true;
    }

    source.addEventListener('heartbeat', function (event) {
      if (current(event)) heard.heartbeat = true;
    });

    source.addEventListener('stream-open', function (event) {
      if (!current(event)) return;
      heard.open = true;
      self.attempt = 0;
      self.setFresh();
      self.setStatus('live', t('status_live'));
    });

    ['notification', 'status', 'fault'].forEach(function (type) {
      source.addEventListener(type, function (event) {
        var data = current(event) && parse(event);
        if (!data) return;
        var fresh = self.isNew(data.stationId, event.lastEventId);
        // A notification already on the page still goes to the handler (marked): the
        // fault frame after it paints its row.
        if (fresh || type === 'notification') self.on.frame(type, data, fresh);
        self.on.connection('live', t('status_live'), self.lastId);
      });
    });

    source.addEventListener('stream-reset', function (event) {
      var data = current(event) && parse(event);
      if (data) self.reset(data.stations || [], data.reasons || {});
    });

    // The server ends a stream whose access was withdrawn, or whose login session
    // signed out (in any tab): a reconnect would be refused. Which one is it?
    source.addEventListener('stream-error', function (event) {
      if (!current(event)) return;
      var data = parse(event) || {};
      source.close();
      self.source = null;
      var ended = t('stream_ended', {
        condition: describe('condition_', data.condition || '?'),
        stations: (data.stations || []).join(', '),
      });
      // Through self.fetch and checked against the session: a new selection aborts it,
      // so its late answer can't end the newer stream.
      self.fetch(self.config.countsUrl).then(function () {
        if (session === self.session) self.end(ended);
      }, function (err) {
        if (session !== self.session || err.name === 'AbortError') return;
        if (err.status === 401) self.signedOut();
        else self.end(ended);
      });
    });

    source.addEventListener('error', function () {
      if (source !== self.source || session !== self.session) return;
      self.lost();
      if (source.readyState === EventSource.CONNECTING) {
        // The browser retries by itself (after the server's retry: hint) and sends
        // Last-Event-ID. That holds only while the server answers 200 text/event-stream.
        self.setStatus('reconnecting', t('status_reconnecting'));
        return;
      }
      // CLOSED: the browser gave up for good (e.g. a 502 from a proxy, or a restart
      // answered with an error). Reconnect ourselves from the last id, with backoff.
      source.close();
      self.source = null;
      self.retryLater(session);
    });
  };

  // The connection is gone: if it stays gone for STALE_AFTER_MS, say so loudly.
  Stream.prototype.lost = function () {
    var self = this;
    if (this.lostAt !== null) return;
    this.lostAt = new Date();
    this.staleTimer = setTimeout(function () {
      self.stale = true;
      self.on.stale(self.lostAt);
    }, STALE_AFTER_MS);
  };

  Stream.prototype.setFresh = function () {
    clearTimeout(this.staleTimer);
    this.staleTimer = null;
    this.lostAt = null;
    if (this.stale) {
      this.stale = false;
      this.on.fresh();
    }
  };

  Stream.prototype.retryLater = function (session) {
    var self = this;
    var delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    if (this.lastId !== null) this.lost();
    this.setStatus('offline', t('status_offline_retry', { seconds: Math.round(delay / 1000) }));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(function () {
      self.retryTimer = null;
      self.connect(session);
    }, delay);
  };

  // Back online (laptop lid, Wi-Fi): don't sit out the rest of a backoff delay.
  Stream.prototype.retryNow = function () {
    if (this.retryTimer && !this.source && this.stations.length && !this.ended) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.connect(this.session);
    }
  };

  // A problem retrying won't fix: say so and stop, instead of reconnecting forever.
  Stream.prototype.end = function (message) {
    var lastId = this.lastId;
    this.stop();
    this.ended = true;
    this.lastId = lastId;
    this.setStatus('offline', t('status_offline'));
    this.on.problem(message, 'error');
  };

  Stream.prototype.signedOut = function () {
    var lastId = this.lastId;
    this.stop();
    this.ended = true;
    this.lastId = lastId;
    this.setStatus('signed-out', t('status_signed_out'));
    this.on.signedOut();
  };

  // stream-reset: the log no longer covers our cursor for these stations (pruned, or a
  // database restored from an older backup), so what the page shows of them may be stale.
  // Start over from a fresh snapshot of every picked station, with a new stream from its
  // cursor: reloading only these stations while the stream carried on live would let the
  // reload's older snapshot and history overwrite frames applied in the meantime.
  Stream.prototype.reset = function (stations, reasons) {
    var names = stations.map(function (code) {
      return code + (reasons[code] ? ' (' + describe('reset_', reasons[code]) + ')' : '');
    }).join(', ');
    this.start(this.stations);
    this.on.problem(t('stream_reset', { stations: names }), 'warn');
  };

  CGM.Stream = Stream;
  CGM.stationQuery = stationQuery;
  CGM.getJSON = getJSON;
})();
