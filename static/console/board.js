// The board: per station, its boxes with their connectors, coloured by status.
//
// Colour comes from the OCPP status only (dashboard.css `[data-status=…]`), never from
// a fault type's spelling. `Offline` (a box that went silent) has its own look, unlike
// Unavailable or "no report yet". A small mark in a cell's corner is the severity of the
// worst unresolved fault there. Built once per snapshot; frames update single cells.
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var t = CGM.t;
  var el = CGM.el;
  var SEVERITY_RANK = { critical: 0, error: 1, warning: 2, info: 3 };

  function boxKey(stationId, boxId) { return stationId + '|' + boxId; }
  function connectorKey(c) { return c.stationId + '|' + c.boxId + '|' + c.connectorId; }

  function statusText(status) {
    return status ? t('status_' + status) : t('status_unknown');
  }

  function Board(root, empty) {
    this.root = root;
    this.empty = empty;
    this.cells = {}; // connector key -> element
    this.boxes = {}; // box key -> element
  }

  Board.prototype.render = function (model) {
    var self = this;
    this.root.textContent = '';
    this.cells = {};
    this.boxes = {};
    model.stations.forEach(function (code) {
      var section = el('section', 'station-board');
      section.dataset.station = code;
      var head = el('h3', 'station-head');
      head.appendChild(el('span', 'code', code));
      if (model.names[code]) head.appendChild(el('span', 'name', model.names[code]));
      section.appendChild(head);
      var boxes = Object.keys(model.boxes).filter(function (k) { return model.boxes[k].stationId === code; });
      boxes.forEach(function (key) { section.appendChild(self.buildBox(model, model.boxes[key])); });
      self.root.appendChild(section);
    });
    this.empty.hidden = model.stations.length > 0;
    Object.keys(model.connectors).forEach(function (key) { self.updateConnector(model.connectors[key]); });
    Object.keys(model.boxes).forEach(function (key) { self.updateBox(model.boxes[key]); });
    this.markFaults(model);
  };

  Board.prototype.buildBox = function (model, box) {
    var node = el('div', 'box');
    node.dataset.box = box.boxId;
    var head = el('div', 'box-head');
    head.appendChild(el('span', 'box-id code', box.boxId));
    head.appendChild(el('span', 'box-status'));
    head.appendChild(el('span', 'box-seen muted'));
    node.appendChild(head);
    var list = el('div', 'connectors');
    Object.keys(model.connectors).forEach(function (key) {
      var c = model.connectors[key];
      if (c.stationId !== box.stationId || c.boxId !== box.boxId) return;
      var cell = el('div', 'connector');
      cell.dataset.connector = c.connectorId;
      cell.appendChild(el('span', 'connector-id', t('connector', { id: c.connectorId })));
      cell.appendChild(el('span', 'connector-status'));
      cell.appendChild(CGM.time.ageElement(null, function (age) { return age ? t('since', { age: age }) : ''; }));
      cell.appendChild(el('span', 'fault-mark'));
      list.appendChild(cell);
      this.cells[key] = cell;
    }, this);
    node.appendChild(list);
    this.boxes[boxKey(box.stationId, box.boxId)] = node;
    return node;
  };

  Board.prototype.updateConnector = function (c) {
    var cell = this.cells[connectorKey(c)];
    if (!cell) return;
    cell.dataset.status = c.status || 'unknown';
    cell.querySelector('.connector-status').textContent = statusText(c.status);
    CGM.time.setAge(cell.querySelector('time'), c.since);
  };

  Board.prototype.updateBox = function (b) {
    var node = this.boxes[boxKey(b.stationId, b.boxId)];
    if (!node) return;
    node.dataset.status = b.status || 'unknown';
    node.querySelector('.box-status').textContent = b.status ? statusText(b.status) : '';
    var seen = node.querySelector('.box-seen');
    seen.textContent = '';
    if (b.lastSeen) {
      seen.appendChild(CGM.time.ageElement(b.lastSeen, function (age) { return t('box_last_seen', { age: age }); }));
    } else {
      seen.textContent = t('box_never_seen');
    }
  };

  // The worst unresolved fault per connector (and per box, for box-level faults).
  Board.prototype.markFaults = function (model) {
    var worst = {};
    Object.keys(model.faults).forEach(function (id) {
      var f = model.faults[id];
      var key = f.connectorId != null ? f.stationId + '|' + f.boxId + '|' + f.connectorId : boxKey(f.stationId, f.boxId);
      if (!worst[key] || SEVERITY_RANK[f.severity] < SEVERITY_RANK[worst[key]]) worst[key] = f.severity;
    });
    var self = this;
    Object.keys(this.cells).forEach(function (key) {
      if (worst[key]) self.cells[key].dataset.fault = worst[key];
      else delete self.cells[key].dataset.fault;
    });
    Object.keys(this.boxes).forEach(function (key) {
      if (worst[key]) self.boxes[key].dataset.fault = worst[key];
      else delete self.boxes[key].dataset.fault;
    });
  };

  CGM.Board = Board;
  CGM.boardKeys = { box: boxKey, connector: connectorKey };
  CGM.SEVERITY_RANK = SEVERITY_RANK;
})();
