/* Shared page helpers: the message catalog, money as yuan from integer fen, calls to the JSON API through
   the page's own proxy (the session cookie is HttpOnly; unsafe calls carry the CSRF token header). */
"use strict";
var Esc = (function () {
  var T = JSON.parse(document.getElementById("i18n").textContent);
  var csrf = document.querySelector('meta[name="csrf"]').content;
  var portal = document.querySelector('meta[name="portal"]').content || "app";

  function t(key) { return Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key; }

  function yuan(fen) {
    // Integer fen only: BigInt keeps it exact for any size, no float arithmetic.
    var n = BigInt(fen), sign = n < 0n ? "-" : "";
    if (n < 0n) n = -n;
    var whole = (n / 100n).toString(), cents = (n % 100n).toString().padStart(2, "0");
    return sign + "¥" + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + cents;
  }

  function units(type, n) {
    if (type === "stored_value") return yuan(n);
    return n + " " + t(type === "count" ? "uses" : "periods");
  }

  function when(iso) {  // as the server renders it: UTC+8, the time people there read
    if (!iso) return "";
    var d = new Date(new Date(iso).getTime() + 8 * 3600 * 1000).toISOString();
    return d.slice(0, 10) + " " + d.slice(11, 16) + " (UTC+8)";
  }

  function key() {
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.from(b, function (x) { return x.toString(16).padStart(2, "0"); }).join("");
  }

  async function call(method, path, body, signal) {
    var headers = {};
    if (method !== "GET") { headers["X-CSRF-Token"] = csrf; headers["Idempotency-Key"] = key(); }
    if (body !== undefined) headers["Content-Type"] = "application/json";
    var r = await fetch("/" + portal + "/api" + path, {
      method: method, headers: headers, credentials: "same-origin", signal: signal,
      body: body === undefined ? undefined : JSON.stringify(body)
    });
    var data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, ok: r.ok, body: data };
  }

  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  /* Long-poll `path` (which takes &wait=): when the server answers at once (no long-poll support, or an
     error), pause about a second before the next poll so the page never spins. */
  async function poll(path, onBody, opts) {
    opts = opts || {};
    var stop = false;
    for (;;) {
      if (stop) return;
      var started = Date.now(), r;
      try { r = await call("GET", path()); } catch (e) { r = { ok: false }; }
      if (r.ok) { stop = onBody(r.body) === false; }
      if (Date.now() - started < 900) await sleep(opts.pause || 1000);
    }
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  return { t: t, yuan: yuan, units: units, when: when, call: call, poll: poll, sleep: sleep, el: el, csrf: csrf };
})();
