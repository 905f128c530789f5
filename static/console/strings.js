// The console's texts and time formats. Every text comes from the page's
// <script id="console-strings" type="application/json"> (rendered by Django from
// notifications/console_strings.py, in the request's language): translating the console
// never means editing JavaScript. Placeholders are %(name)s, as in Django's gettext.
(function () {
  'use strict';

  var CGM = (window.CGM = window.CGM || {});
  var element = document.getElementById('console-strings');
  var strings = element ? JSON.parse(element.textContent) : {};

  // A missing key shows itself as the key: visible in a screenshot, never a blank.
  function t(key, params) {
    var text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    return text.replace(/%\((\w+)\)s/g, function (match, name) {
      return params && params[name] != null ? String(params[name]) : match;
    });
  }

  // Two forms (`_one`, `_other`), as ngettext gives English.
  function plural(key, count, params) {
    var merged = Object.assign({ count: count }, params || {});
    return t(key + (count === 1 ? '_one' : '_other'), merged);
  }

  function clock(date) {
    if (!(date instanceof Date) || isNaN(date)) return '';
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  // Today: the time of day; another day: date and time.
  function stamp(date) {
    if (!(date instanceof Date) || isNaN(date)) return '';
    if (date.toDateString() === new Date().toDateString()) return clock(date);
    return date.toLocaleDateString() + ' ' + clock(date);
  }

  // "2 min ago". Device clocks run ahead at times: a future time reads as "just now".
  function ago(date, now) {
    if (!(date instanceof Date) || isNaN(date)) return '';
    var seconds = Math.floor(((now || Date.now()) - date.getTime()) / 1000);
    if (seconds < 5) return t('ago_now');
    if (seconds < 60) return t('ago_seconds', { count: seconds });
    if (seconds < 3600) return t('ago_minutes', { count: Math.floor(seconds / 60) });
    if (seconds < 86400) return t('ago_hours', { count: Math.floor(seconds / 3600) });
    return t('ago_days', { count: Math.floor(seconds / 86400) });
  }

  function parseTime(value) {
    return value ? new Date(value) : null;
  }

  // A <time> whose text is a relative age, refreshed by refreshAges(); its tooltip is
  // the absolute time. `format` turns the age into the shown text ("since 2 min ago").
  function ageElement(value, format) {
    var el = document.createElement('time');
    el.className = 'age';
    if (value) el.dateTime = value;
    el._format = format || null;
    setAge(el, value);
    return el;
  }

  function setAge(el, value) {
    el.dataset.ts = value || '';
    var date = parseTime(value);
    el.title = date ? date.toLocaleString() : '';
    var age = date ? ago(date) : '';
    el.textContent = el._format ? el._format(age) : age;
  }

  function refreshAges(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll('time.age'), function (el) {
      setAge(el, el.dataset.ts);
    });
  }

  // The one way the console puts server data on the page: text nodes, never markup.
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = String(text);
    return node;
  }

  // Identifiers such as SYSTEM_DATA_CHANGED may wrap after their underscores (a <wbr>
  // after each), so a narrow column breaks them between words, not inside one.
  function breakable(tag, className, text) {
    var node = el(tag, className);
    String(text == null ? '' : text).split(/(?<=_)/).forEach(function (part, index) {
      if (index) node.appendChild(document.createElement('wbr'));
      node.appendChild(document.createTextNode(part));
    });
    return node;
  }

  CGM.t = t;
  CGM.breakable = breakable;
  CGM.plural = plural;
  CGM.time = { clock: clock, stamp: stamp, ago: ago, parse: parseTime, ageElement: ageElement, setAge: setAge, refreshAges: refreshAges };
  CGM.el = el;
})();
