// The unresolved faults: most severe first, then the most recent; with how often, since
// when, who is on it; and the operator's actions (acknowledge, unacknowledge, resolve,
// a note), posted with the session's CSRF token.
//
// Items are kept per fault id and updated in place, so a frame arriving while an
// operator types a note never wipes the note field.
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var t = CGM.t;
  var el = CGM.el;
  // A fault the server says is resolved (409) or not visible (404) stays this long with
  // the reason on it, then leaves the list: the operator sees why it went.
  var GONE_AFTER_MS = 3000;

  function where(f) {
    if (f.connectorId != null) return t('where_connector', { station: f.stationId, box: f.boxId, connector: f.connectorId });
    if (f.boxId != null) return t('where_box', { station: f.stationId, box: f.boxId });
    return f.stationId;
  }

  function compare(a, b) {
    var rank = CGM.SEVERITY_RANK[a.severity] - CGM.SEVERITY_RANK[b.severity];
    if (rank) return rank;
    return String(b.lastSeen).localeCompare(String(a.lastSeen)) || Number(b.id) - Number(a.id);
  }

  // options: faultUrl ("/api/faults/0"), csrfToken(), shown(fault) (the filters),
  // applied(fault) (an action's answer), gone(id) (the server no longer has it for us:
  // resolved, or not visible), signedOut()
  function FaultList(root, empty, count, options) {
    this.root = root;
    this.empty = empty;
    this.count = count;
    this.options = options;
    this.items = {};
  }

  FaultList.prototype.render = function (model) {
    var self = this;
    var faults = Object.keys(model.faults).map(function (id) { return model.faults[id]; }).sort(compare);
    var ids = {};
    var shown = 0;
    faults.forEach(function (f, index) {
      ids[f.id] = true;
      var item = self.items[f.id] || (self.items[f.id] = self.build(f));
      self.update(item, f);
      item.hidden = !self.options.shown(f);
      if (!item.hidden) shown += 1;
      if (self.root.children[index] !== item) self.root.insertBefore(item, self.root.children[index] || null);
    });
    Object.keys(this.items).forEach(function (id) {
      if (!ids[id]) {
        self.items[id].remove();
        delete self.items[id];
      }
    });
    var unack = faults.filter(function (f) { return f.state === 'open'; }).length;
    this.count.textContent = faults.length ? CGM.plural('faults_count', faults.length, { unack: unack }) : '';
    this.empty.hidden = shown > 0 || !model.stations.length;
    this.empty.textContent = faults.length ? t('faults_hidden', { count: faults.length - shown }) : t('faults_none');
  };

  FaultList.prototype.build = function (f) {
    var item = el('li', 'fault-item');
    item.dataset.id = f.id;
    var main = el('div', 'fault-main');
    main.appendChild(el('span', 'sev-badge'));
    main.appendChild(el('span', 'fault-type code'));
    main.appendChild(el('span', 'fault-code code'));
    main.appendChild(el('span', 'where'));
    item.appendChild(main);
    var meta = el('div', 'fault-meta');
    meta.appendChild(el('span', 'occurrences'));
    meta.appendChild(CGM.time.ageElement(null, function (age) { return t('first_seen', { age: age }); }));
    meta.appendChild(CGM.time.ageElement(null, function (age) { return t('last_seen', { age: age }); }));
    meta.appendChild(el('span', 'ack'));
    item.appendChild(meta);
    item.appendChild(el('p', 'fault-note'));
    var actions = el('div', 'fault-actions');
    var note = el('input', 'note-input');
    note.type = 'text';
    note.maxLength = 2000;
    note.placeholder = t('note_placeholder');
    note.setAttribute('aria-label', t('note_label', { id: f.id }));
    actions.appendChild(note);
    ['acknowledge', 'unacknowledge', 'note', 'resolve'].forEach(function (action) {
      var button = el('button', 'act act-' + action, t('action_' + action));
      button.type = 'button';
      button.dataset.action = action;
      actions.appendChild(button);
    });
    item.appendChild(actions);
    var error = el('p', 'fault-error');
    error.setAttribute('role', 'alert');
    error.hidden = true;
    item.appendChild(error);
    actions.addEventListener('click', this.onAction.bind(this, item));
    note.addEventListener('keydown', function (event) {
      // Enter sends the note with the natural next step: acknowledge an open fault, or
      // save the note of one someone is on.
      if (event.key !== 'Enter') return;
      var next = item.dataset.state === 'open' ? 'acknowledge' : 'note';
      item.querySelector('.act-' + next).click();
    });
    return item;
  };

  FaultList.prototype.update = function (item, f) {
    item.dataset.severity = f.severity;
    item.dataset.state = f.state;
    item.className = 'fault-item sev-' + f.severity + ' state-' + f.state;
    item.querySelector('.sev-badge').textContent = t('severity_' + f.severity);
    item.querySelector('.fault-type').textContent = f.faultType;
    item.querySelector('.fault-code').textContent = f.code || '';
    item.querySelector('.fault-code').hidden = !f.code;
    item.querySelector('.where').textContent = where(f);
    item.querySelector('.occurrences').textContent = CGM.plural('occurrences', f.occurrences);
    var times = item.querySelectorAll('.fault-meta time');
    CGM.time.setAge(times[0], f.firstSeen);
    CGM.time.setAge(times[1], f.lastSeen);
    var ack = item.querySelector('.ack');
    ack.textContent = '';
    if (f.state === 'acknowledged') {
      ack.appendChild(CGM.time.ageElement(f.acknowledgedAt, function (age) {
        return t('acknowledged_by', { who: f.acknowledgedBy || '?', age: age });
      }));
    } else {
      ack.textContent = t('not_acknowledged');
    }
    var note = item.querySelector('.fault-note');
    note.textContent = f.note ? t('note', { note: f.note }) : '';
    note.hidden = !f.note;
    item.querySelector('.act-acknowledge').hidden = f.state !== 'open';
    item.querySelector('.act-unacknowledge').hidden = f.state !== 'acknowledged';
    item.querySelector('.act-note').hidden = f.state !== 'acknowledged';
  };

  FaultList.prototype.onAction = function (item, event) {
    var button = event.target.closest('button[data-action]');
    if (!button || button.disabled) return;
    var self = this;
    var action = button.dataset.action;
    var input = item.querySelector('.note-input');
    var note = input.value.trim();
    // "Save note" is a repeated acknowledge with the note: the API records it as a note.
    var path = action === 'note' ? 'acknowledge' : action;
    var body = note ? JSON.stringify({ note: note }) : '{}';
    var url = this.options.faultUrl.replace(/0$/, encodeURIComponent(item.dataset.id)) + '/' + path;
    var error = item.querySelector('.fault-error');
    var buttons = item.querySelectorAll('button');
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    error.hidden = true;
    item.setAttribute('aria-busy', 'true');

    function fail(message) {
      error.textContent = t('action_failed', { action: button.textContent, message: message });
      error.hidden = false;
    }
    var gone = false;
    function goneLater(message) {
      gone = true;
      fail(message);
      setTimeout(function () { self.options.gone(item.dataset.id); }, GONE_AFTER_MS);
    }

    fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        Accept: 'application/json',
        'Content-Type': 'application/json',
        'X-CSRFToken': this.options.csrfToken(),
      },
      body: body,
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) {
          input.value = '';
          self.options.applied(data);
          return;
        }
        if (response.status === 409) goneLater(t('action_conflict'));
        else if (response.status === 404) goneLater(t('action_gone'));
        else if (response.status === 401) { fail(t('action_signed_out')); self.options.signedOut(); }
        else if (response.status === 403) fail(data.message || t('action_forbidden'));
        else fail(data.message || t('http_status', { status: response.status }));
      });
    }, function () {
      fail(t('action_failed_network'));
    }).finally(function () {
      // A fault on its way out keeps its buttons disabled: nothing left to act on.
      if (!gone) Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
      item.removeAttribute('aria-busy');
    });
  };

  CGM.FaultList = FaultList;
  CGM.faultWhere = where;
})();
