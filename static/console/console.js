// The operator's console: wires the picker, the connection (stream.js), the board, the
// fault list, the log and the alerts around one model of the picked stations:
//   boxes, connectors (keyed "STATION|BOX[|CONNECTOR]") and unresolved faults (by id),
// loaded as a snapshot and kept current by the stream's status and fault frames.
(function () {
  'use strict';

  var CGM = window.CGM;
  var t = CGM.t;
  var body = document.body;
  var $ = function (id) { return document.getElementById(id); };
  var BADGE_POLL_MS = 30000;
  var AGE_REFRESH_MS = 15000;

  var config = {
    historyUrl: body.dataset.historyUrl,
    stateUrl: body.dataset.stateUrl,
    countsUrl: body.dataset.countsUrl,
    faultUrl: body.dataset.faultUrl,
    streamUrl: body.dataset.streamUrl,
    historyLimit: Number(body.dataset.historyLimit) || 50,
    maxRows: Number(body.dataset.maxRows) || 500,
    maxStations: Number(body.dataset.maxStations) || 500,
    heartbeatSeconds: Number(body.dataset.heartbeatSeconds) || 15,
    loginUrl: body.dataset.loginUrl || '',
  };

  var ui = {
    status: $('status'),
    notice: $('notice'),
    banner: $('stale-banner'),
    filter: $('station-filter'),
    filterEmpty: $('filter-empty'),
    list: $('station-list'),
    selectedCount: $('selected-count'),
    drawerCount: $('drawer-count'),
    filters: $('filters'),
  };
  var checkboxes = Array.prototype.slice.call(ui.list.querySelectorAll('input[name=station]'));
  var names = {};
  checkboxes.forEach(function (box) {
    var name = box.parentNode.querySelector('.name');
    names[box.value] = name ? name.textContent : '';
  });

  var model = { stations: [], names: names, boxes: {}, connectors: {}, faults: {} };
  var view = { stale: false, signedOut: false, polled: {} };

  // --- Filters: severity (faults and log) and kind (log) -----------------------------

  var filters = { severities: {}, kind: 'all' };
  function readFilters() {
    Array.prototype.forEach.call(ui.filters.querySelectorAll('input[name=severity]'), function (box) {
      filters.severities[box.value] = box.checked;
    });
    var kind = ui.filters.querySelector('input[name=kind]:checked');
    filters.kind = kind ? kind.value : 'all';
  }
  function faultShown(f) { return filters.severities[f.severity] !== false; }
  function rowShown(row) {
    var severity = row.dataset.severity;
    if (filters.severities[severity] === false) return false;
    if (filters.kind === 'faults') return row.dataset.fault === '1';
    if (filters.kind === 'status') return !!row.dataset.status;
    return true;
  }

  var labels = Array.prototype.map.call(document.querySelectorAll('#feed thead th'), function (th) { return th.textContent; });
  var board = new CGM.Board($('board'), $('board-empty'));
  var feed = new CGM.Feed(document.querySelector('#feed tbody'), $('feed-empty'), $('row-count'),
    { maxRows: config.maxRows, shown: rowShown, labels: labels });
  var alerts = new CGM.Alerts({ sound: $('pref-sound'), desktop: $('pref-desktop'), problem: $('pref-problem') });
  var faultList = new CGM.FaultList($('faults'), $('faults-empty'), $('faults-count'), {
    faultUrl: config.faultUrl,
    csrfToken: function () {
      var input = document.querySelector('#logout input[name=csrfmiddlewaretoken]');
      return input ? input.value : '';
    },
    shown: faultShown,
    // An action's answer may come late: after a frame resolved the fault (the answer
    // would bring it back) or after its station was unticked. Frames are the truth for
    // what is listed; an answer only updates a fault still listed.
    applied: function (fault) {
      if (model.stations.indexOf(fault.stationId) === -1 || !model.faults[fault.id]) return;
      applyFault(fault, false);
    },
    gone: function (id) {
      if (!model.faults[id]) return;
      delete model.faults[id];
      refresh();
    },
    signedOut: function () { stream.signedOut(); },
  });

  // --- Notices -------------------------------------------------------------------------

  function showNotice(text, kind) {
    ui.notice.textContent = text || '';
    ui.notice.className = 'notice' + (kind ? ' notice-' + kind : '');
    ui.notice.hidden = !text;
  }

  function summary() {
    var unack = 0;
    var worst = null;
    Object.keys(model.faults).forEach(function (id) {
      var f = model.faults[id];
      if (f.state !== 'open') return;
      unack += 1;
      if (worst === null || CGM.SEVERITY_RANK[f.severity] < CGM.SEVERITY_RANK[worst]) worst = f.severity;
    });
    return { unack: unack, worst: worst || 'none', stale: view.stale, signedOut: view.signedOut };
  }

  // The picked stations' badges come from the model (live); the others from the poll.
  // Counts are copied, never changed in place: view.polled stays the poll's answer.
  function showBadges() {
    var counts = {};
    Object.keys(view.polled).forEach(function (code) {
      counts[code] = { critical: view.polled[code].critical, error: view.polled[code].error };
    });
    model.stations.forEach(function (code) { counts[code] = { critical: 0, error: 0 }; });
    Object.keys(model.faults).forEach(function (id) {
      var f = model.faults[id];
      var station = counts[f.stationId];
      if (station && (f.severity === 'critical' || f.severity === 'error')) station[f.severity] += 1;
    });
    alerts.badges(ui.list, counts);
  }

  function refresh() {
    faultList.render(model);
    board.markFaults(model);
    alerts.show(summary());
    showBadges();
  }

  // --- Model updates from the snapshot and the frames ----------------------------------

  function applyFault(f, announce) {
    var known = model.faults[f.id];
    if (f.state === 'resolved') delete model.faults[f.id];
    else model.faults[f.id] = f;
    // Announce a critical fault the first time the page sees it open, live or replayed
    // after a reconnect; never for the snapshot the page starts from.
    if (announce && !known && f.state === 'open' && f.severity === 'critical') alerts.newCritical(f);
    refresh();
  }

  var handlers = {
    connection: function (state, text, cursor) {
      ui.status.dataset.state = state;
      ui.status.textContent = text;
      ui.status.dataset.cursor = cursor || '';
      ui.status.title = cursor ? t('cursor_tooltip', { cursor: cursor }) : '';
    },
    // A snapshot of `stations` (the picked ones: at the start, or again after a
    // stream-reset): it replaces what the page had of them.
    snapshot: function (stations, snapshot, history) {
      function ours(x) { return stations.indexOf(x.stationId) !== -1; }
      [model.boxes, model.connectors, model.faults].forEach(function (map) {
        Object.keys(map).forEach(function (key) { if (ours(map[key])) delete map[key]; });
      });
      snapshot.boxes.forEach(function (b) { model.boxes[CGM.boardKeys.box(b.stationId, b.boxId)] = b; });
      snapshot.connectors.forEach(function (c) { model.connectors[CGM.boardKeys.connector(c)] = c; });
      snapshot.faults.forEach(function (f) { model.faults[f.id] = f; });
      board.render(model);
      feed.clear(stations);
      history.forEach(function (n) { feed.add(n, false, model.faults); });
      feed.info(model.stations.length > 0);
      refresh();
    },
    frame: function (type, data, fresh) {
      if (type === 'notification') {
        feed.add(data, true, null);
        feed.info(true);
        // The box was heard from. The server does not push lastSeen-only changes (a frame
        // per event for nothing), but every notification says it.
        var box = model.boxes[CGM.boardKeys.box(data.stationId, data.boxId)];
        if (box && data.receivedAt && (!box.lastSeen || box.lastSeen < data.receivedAt)) {
          box.lastSeen = data.receivedAt;
          board.updateBox(box);
        }
        return;
      }
      feed.frame(type, data);
      if (type === 'status') {
        if (data.connectorId !== undefined) {
          model.connectors[CGM.boardKeys.connector(data)] = data;
          board.updateConnector(data);
        } else {
          model.boxes[CGM.boardKeys.box(data.stationId, data.boxId)] = data;
          board.updateBox(data);
        }
      } else if (type === 'fault') {
        applyFault(data, fresh);
        feed.info(true);
      }
    },
    stale: function (since) {
      view.stale = true;
      ui.banner.textContent = t('stale_banner', { time: CGM.time.clock(since) });
      ui.banner.hidden = false;
      body.classList.add('stale');
      alerts.show(summary());
    },
    fresh: function () {
      view.stale = false;
      ui.banner.hidden = true;
      body.classList.remove('stale');
      alerts.show(summary());
    },
    problem: function (text, kind) { showNotice(text, kind); },
    signedOut: function () {
      view.signedOut = true;
      ui.banner.hidden = true;
      body.classList.remove('stale');
      body.classList.add('signed-out');
      showNotice(t('signed_out'), 'error');
      if (config.loginUrl) {
        var link = CGM.el('a', null, t('sign_in_again'));
        link.href = config.loginUrl + '?next=' + encodeURIComponent(location.pathname + location.search);
        ui.notice.appendChild(document.createTextNode(' '));
        ui.notice.appendChild(link);
      }
      clearInterval(badgePoll);
      alerts.show(summary());
    },
  };
  var stream = new CGM.Stream(config, handlers);

  // --- Selection -----------------------------------------------------------------------

  function selectedStations() {
    return checkboxes.filter(function (box) { return box.checked; }).map(function (box) { return box.value; });
  }

  function restart() {
    if (view.signedOut) return;
    var stations = selectedStations();
    stream.stop();
    showNotice('');
    model.stations = stations.length > config.maxStations ? [] : stations;
    model.boxes = {};
    model.connectors = {};
    model.faults = {};
    board.render(model);
    feed.clear();
    feed.info(false);
    refresh();
    if (!stations.length) {
      handlers.connection('idle', t('status_idle'), null);
      return;
    }
    if (stations.length > config.maxStations) {
      handlers.connection('idle', t('status_too_many'), null);
      showNotice(t('too_many_stations', { max: config.maxStations }), 'warn');
      return;
    }
    stream.start(stations);
  }

  function onSelectionChanged() {
    var stations = selectedStations();
    ui.selectedCount.textContent = t('selected_count', { selected: stations.length, total: checkboxes.length });
    ui.drawerCount.textContent = String(stations.length);
    // Keep the selection in the address, so a reload or a shared link shows this console.
    var query = CGM.stationQuery(stations);
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
    ui.filterEmpty.hidden = shown > 0 || !checkboxes.length;
  }

  ui.list.addEventListener('change', onSelectionChanged);
  ui.filter.addEventListener('input', applyFilter);
  // Enter in the filter box would submit the no-JavaScript form: ignore it here.
  $('picker').addEventListener('submit', function (event) { event.preventDefault(); });
  $('select-shown').addEventListener('click', function () {
    checkboxes.forEach(function (box) { if (!box.closest('li').hidden) box.checked = true; });
    onSelectionChanged();
  });
  $('clear-selection').addEventListener('click', function () {
    checkboxes.forEach(function (box) { box.checked = false; });
    onSelectionChanged();
  });

  ui.filters.addEventListener('change', function () {
    readFilters();
    faultList.render(model);
    feed.filter();
    feed.info(model.stations.length > 0);
  });

  // --- The picker as a drawer (phones) -------------------------------------------------

  function drawer(open) {
    body.classList.toggle('drawer-open', open);
    $('drawer-toggle').setAttribute('aria-expanded', open ? 'true' : 'false');
    $('drawer-backdrop').hidden = !open;
  }
  $('drawer-toggle').addEventListener('click', function () { drawer(!body.classList.contains('drawer-open')); });
  $('drawer-close').addEventListener('click', function () { drawer(false); });
  $('drawer-backdrop').addEventListener('click', function () { drawer(false); });
  document.addEventListener('keydown', function (event) { if (event.key === 'Escape') drawer(false); });

  // --- Timers --------------------------------------------------------------------------

  // The other stations' badges: the stream covers only the picked ones.
  function pollBadges() {
    CGM.getJSON(config.countsUrl).then(function (data) {
      view.polled = data.stations || {};
      showBadges();
      if (view.pollFailed) alerts.problem('');
      view.pollFailed = false;
    }, function (err) {
      if (err.status === 401) return stream.signedOut();
      // While the stream is down the stale banner says it already; otherwise say it here.
      if (view.stale) return;
      view.pollFailed = true;
      alerts.problem(t('badge_poll_failed', { message: err.message }));
    });
  }
  var badgePoll = setInterval(pollBadges, BADGE_POLL_MS);
  setInterval(function () { CGM.time.refreshAges(); }, AGE_REFRESH_MS);

  window.addEventListener('online', function () { stream.retryNow(); });

  readFilters();
  pollBadges();
  restart();
})();
