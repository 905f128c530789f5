// The log: the stations' notifications, newest first, each painted by what it did.
//
// A notification carries no severity: the fault frame that follows it in the same
// committed change does (docs/FAULTS.md: notification, then status, then fault frames).
// So a row waits, keyed by its fault key, for that frame: an opening or a raise paints it
// with the fault's severity, a resolve naming it (`resolvedBy: "event:<id>"`) marks it
// "cleared". A row no fault frame follows (a notice such as NO_ERROR, a pure status
// report) stays neutral: colour never comes from the fault type's spelling.
// Rows loaded from the log's history get the severity of a still unresolved fault of
// their key that they belong to (fired at or after its first occurrence).
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var t = CGM.t;
  var el = CGM.el;

  function faultKey(x) {
    return [x.stationId, x.boxId == null ? '' : x.boxId, x.connectorId == null ? '' : String(x.connectorId),
      x.faultType, x.code == null ? '' : x.code].join('|');
  }

  function eventTime(n) {
    return new Date(n.timestamp || n.receivedAt).getTime();
  }

  // options: maxRows, shown(row) (the filters), labels (column names, for phone cards)
  function Feed(tbody, empty, count, options) {
    this.tbody = tbody;
    this.empty = empty;
    this.count = count;
    this.options = options;
    this.rows = {}; // "STATION:SEQ" -> row
    this.changes = {}; // station -> {rows, closed}: the notifications of its latest change
  }

  Feed.prototype.cell = function (row, index, text, className) {
    var td = el('td', className, text == null ? '' : text);
    td.dataset.label = this.options.labels[index] || '';
    row.appendChild(td);
    return td;
  };

  Feed.prototype.build = function (n, fresh) {
    var row = el('tr');
    var received = new Date(n.receivedAt);
    row.dataset.key = n.stationId + ':' + n.seq;
    row.dataset.station = n.stationId;
    row.dataset.id = n.id;
    row.dataset.time = String(received.getTime() || 0);
    row.dataset.severity = 'notice';
    row.dataset.faultKey = faultKey(n);
    var status = n.extra && typeof n.extra.status === 'string' ? n.extra.status : '';
    if (status) row.dataset.status = status;
    if (fresh) {
      row.classList.add('fresh');
      // The flash is over after 2.5 s; the class goes too, so a later repaint or a
      // filter change never replays it.
      setTimeout(function () { row.classList.remove('fresh'); }, 3000);
    }

    this.cell(row, 0, CGM.time.stamp(received), 'time').title = t('received_title', { time: n.receivedAt });
    var device = n.timestamp ? new Date(n.timestamp) : null;
    var deviceCell = this.cell(row, 1, device && !isNaN(device) ? CGM.time.stamp(device) : '', 'time device');
    if (device) deviceCell.title = t('device_title', { time: n.timestamp });
    this.cell(row, 2, n.stationId, 'code');
    this.cell(row, 3, n.boxId, 'code');
    this.cell(row, 4, n.connectorId, 'code');
    var type = this.cell(row, 5, '', 'type');
    type.appendChild(CGM.breakable('span', 'fault', n.faultType || ''));
    type.appendChild(el('span', 'kind'));
    this.cell(row, 6, '').appendChild(CGM.breakable('span', null, n.action));
    this.cell(row, 7, n.message, 'message');
    this.cell(row, 8, n.code, 'code');
    this.paint(row, 'notice');
    return row;
  };

  Feed.prototype.paint = function (row, severity) {
    row.dataset.severity = severity;
    row.className = row.className.replace(/\bsev-\S+/g, '').trim() + ' sev-' + severity;
    if (severity !== 'notice') row.dataset.fault = '1';
    var kind = row.querySelector('.kind');
    kind.textContent = severity === 'notice' ? '' : severity === 'cleared' ? t('kind_cleared') : t('severity_' + severity);
  };

  // Rows are ordered by server receive time, newest first. Live events land on top;
  // the walk matters only when history (given newest first) merges older rows.
  // `live`: from the stream (then it may be a repeat of a history row, and it belongs to
  // the station's current change); `faults`: for history rows, the unresolved faults.
  Feed.prototype.add = function (n, live, faults) {
    var key = n.stationId + ':' + n.seq;
    var row = this.rows[key];
    if (!row) {
      row = this.rows[key] = this.build(n, live);
      var time = Number(row.dataset.time);
      var next = this.tbody.firstElementChild;
      while (next && (live ? Number(next.dataset.time) > time : Number(next.dataset.time) >= time)) {
        next = next.nextElementSibling;
      }
      this.tbody.insertBefore(row, next);
      while (this.tbody.rows.length > this.options.maxRows) this.remove(this.tbody.lastElementChild);
      if (faults) this.paintFromFaults(row, n, faults);
      row.hidden = !this.options.shown(row);
    }
    if (live) {
      // A notification after a status or fault frame starts the station's next change.
      var change = this.changes[n.stationId];
      if (!change || change.closed) change = this.changes[n.stationId] = { rows: [], closed: false };
      change.rows.push(row);
    }
    return row;
  };

  Feed.prototype.paintFromFaults = function (row, n, faults) {
    var fk = faultKey(n);
    var time = eventTime(n);
    Object.keys(faults).forEach(function (id) {
      var f = faults[id];
      if (faultKey(f) === fk && time >= new Date(f.firstSeen).getTime()) this.paint(row, f.severity);
    }, this);
  };

  // A status or fault frame of a station: it belongs to the change whose notifications
  // came just before it. A fault frame paints that change's rows of its key.
  Feed.prototype.frame = function (type, data) {
    var change = this.changes[data.stationId];
    if (!change) return;
    change.closed = true;
    if (type !== 'fault') return;
    var fk = faultKey(data);
    change.rows.forEach(function (row) {
      if (row.dataset.faultKey !== fk) return;
      if (data.state === 'resolved') {
        if (data.resolvedBy === 'event:' + row.dataset.id) this.paint(row, 'cleared');
      } else {
        this.paint(row, data.severity);
      }
      row.hidden = !this.options.shown(row);
    }, this);
  };

  Feed.prototype.remove = function (row) {
    delete this.rows[row.dataset.key];
    row.remove();
  };

  Feed.prototype.clear = function (stations) {
    Array.prototype.slice.call(this.tbody.rows).forEach(function (row) {
      if (!stations || stations.indexOf(row.dataset.station) !== -1) this.remove(row);
    }, this);
    this.changes = {};
  };

  Feed.prototype.filter = function () {
    Array.prototype.forEach.call(this.tbody.rows, function (row) {
      row.hidden = !this.options.shown(row);
    }, this);
  };

  Feed.prototype.info = function (selected) {
    var total = this.tbody.rows.length;
    var hidden = this.tbody.querySelectorAll('tr[hidden]').length;
    this.empty.hidden = total > 0;
    this.empty.textContent = selected ? t('feed_empty') : t('feed_empty_none');
    var text = total ? CGM.plural('feed_count', total) : '';
    if (total >= this.options.maxRows) text += ' ' + t('feed_dropped');
    if (hidden) text += ' · ' + t('feed_hidden', { count: hidden });
    this.count.textContent = text;
  };

  CGM.Feed = Feed;
  CGM.faultKey = faultKey;
})();
