// Getting the operator's attention when the page is not in front: the tab title and the
// favicon carry the unacknowledged count (and say when the data is stale); a new
// critical fault beeps and raises a desktop notification, each only if the operator
// opted in (remembered in localStorage); the picker's badges count each station's
// unresolved critical and error faults.
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var t = CGM.t;
  var el = CGM.el;
  var PREFS = { sound: 'cgm.console.sound', desktop: 'cgm.console.desktop' };
  var FAVICON_COLOURS = { critical: '#7f0a1f', error: '#c62828', warning: '#9a6700', info: '#1f6feb', none: '#5f6b7a' };

  function stored(key) {
    try { return window.localStorage.getItem(key) === '1'; } catch (e) { return false; }
  }

  function store(key, on) {
    try { window.localStorage.setItem(key, on ? '1' : '0'); } catch (e) { /* private mode: per page only */ }
  }

  // ui: {sound, desktop, problem} (the two opt-in checkboxes and where to say why not)
  function Alerts(ui) {
    this.ui = ui;
    this.favicon = document.getElementById('favicon');
    this.audio = null;
    this.lastIcon = null;
    ui.sound.checked = stored(PREFS.sound);
    ui.desktop.checked = stored(PREFS.desktop) && 'Notification' in window && Notification.permission === 'granted';
    ui.sound.addEventListener('change', this.onSound.bind(this));
    ui.desktop.addEventListener('change', this.onDesktop.bind(this));
    // Browsers start audio only after a user gesture: a remembered opt-in gets its
    // AudioContext at the operator's first click on the page.
    var self = this;
    document.addEventListener('pointerdown', function () { if (ui.sound.checked) self.audioContext(); }, { once: true });
  }

  Alerts.prototype.problem = function (text) {
    this.ui.problem.textContent = text || '';
    this.ui.problem.hidden = !text;
  };

  Alerts.prototype.audioContext = function () {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    if (!this.audio) this.audio = new Context();
    if (this.audio.state === 'suspended') this.audio.resume();
    return this.audio;
  };

  Alerts.prototype.onSound = function () {
    store(PREFS.sound, this.ui.sound.checked);
    this.problem('');
    if (!this.ui.sound.checked) return;
    if (!this.audioContext()) {
      this.ui.sound.checked = false;
      this.problem(t('sound_unsupported'));
    }
  };

  Alerts.prototype.onDesktop = function () {
    var self = this;
    var box = this.ui.desktop;
    this.problem('');
    if (!box.checked) { store(PREFS.desktop, false); return; }
    if (!('Notification' in window)) {
      box.checked = false;
      this.problem(t('desktop_unsupported'));
      return;
    }
    Promise.resolve(Notification.permission === 'granted' ? 'granted' : Notification.requestPermission())
      .then(function (permission) {
        box.checked = permission === 'granted';
        store(PREFS.desktop, box.checked);
        if (!box.checked) self.problem(t('desktop_denied'));
      });
  };

  // Two short tones: audible over a depot's noise, over before it annoys.
  Alerts.prototype.beep = function () {
    var ctx = this.audioContext();
    if (!ctx) return;
    [0, 0.25].forEach(function (offset) {
      var osc = ctx.createOscillator();
      var gain = ctx.createGain();
      osc.type = 'square';
      osc.frequency.value = 880;
      gain.gain.value = 0.08;
      osc.connect(gain);
      gain.connect(ctx.destination);
      osc.start(ctx.currentTime + offset);
      osc.stop(ctx.currentTime + offset + 0.15);
    });
  };

  // A fault the page had not seen, opened as critical.
  Alerts.prototype.newCritical = function (fault) {
    if (this.ui.sound.checked) this.beep();
    if (this.ui.desktop.checked && 'Notification' in window && Notification.permission === 'granted') {
      var notice = new Notification(t('desktop_title', { station: fault.stationId }), {
        body: t('desktop_body', { faultType: fault.faultType, where: CGM.faultWhere(fault) }),
        tag: 'cgm-fault-' + fault.id, // one per fault, however often it is announced
        requireInteraction: true,
      });
      notice.onclick = function () { window.focus(); notice.close(); };
    }
  };

  // {unack, worst, stale, signedOut}: the title and the favicon.
  Alerts.prototype.show = function (summary) {
    var title = t('title');
    if (summary.unack > 0) title = t('title_unacknowledged', { count: summary.unack, title: title });
    if (summary.stale) title = t('title_stale', { title: title });
    if (summary.signedOut) title = t('title_signed_out', { title: title });
    if (document.title !== title) document.title = title;
    var icon = [summary.unack, summary.worst, summary.stale].join('|');
    if (icon !== this.lastIcon) {
      this.lastIcon = icon;
      this.drawFavicon(summary);
    }
  };

  // A round badge with the count, coloured by the worst unacknowledged severity; greyed
  // when stale. Drawn on a canvas: no image files to ship.
  Alerts.prototype.drawFavicon = function (summary) {
    var canvas = document.createElement('canvas');
    canvas.width = canvas.height = 32;
    var g = canvas.getContext('2d');
    if (!g) return;
    g.fillStyle = summary.stale ? '#8a96a3' : FAVICON_COLOURS[summary.unack ? summary.worst : 'none'];
    g.beginPath();
    g.arc(16, 16, 15, 0, Math.PI * 2);
    g.fill();
    g.fillStyle = '#ffffff';
    g.font = 'bold ' + (summary.unack > 99 ? 13 : 18) + 'px sans-serif';
    g.textAlign = 'center';
    g.textBaseline = 'middle';
    g.fillText(summary.unack > 999 ? '999+' : String(summary.unack || '✓'), 16, 17);
    this.favicon.href = canvas.toDataURL('image/png');
    this.favicon.dataset.count = String(summary.unack);
    this.favicon.dataset.stale = summary.stale ? '1' : '0';
  };

  // counts: {code: {critical, error}}; codes absent have none.
  Alerts.prototype.badges = function (root, counts) {
    Array.prototype.forEach.call(root.querySelectorAll('.badges[data-station]'), function (node) {
      var c = counts[node.dataset.station] || { critical: 0, error: 0 };
      var key = c.critical + '|' + c.error;
      if (node.dataset.counts === key) return;
      node.dataset.counts = key;
      node.textContent = '';
      node.title = c.critical || c.error ? t('badge_title', c) : '';
      if (c.critical) node.appendChild(el('span', 'badge sev-critical', c.critical));
      if (c.error) node.appendChild(el('span', 'badge sev-error', c.error));
    });
  };

  CGM.Alerts = Alerts;
})();
