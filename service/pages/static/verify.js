/* Verify receipt, in the browser, trusting nothing the page says: fetch the entry, its RFC 9162 inclusion proof,
   the latest signed checkpoint and the platform's public key; check SHA-256(0x00 ‖ canonical) is the leaf hash,
   the proof leads from that leaf to the checkpoint's root, and the checkpoint's C2SP signed note carries a valid
   Ed25519 signature by the platform's key (key id = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]). Witness cosignatures
   (C2SP tlog-cosignature) are checked against the witness keys the page lists, else reported as unverified. */
"use strict";
var Verify = (function () {
  var enc = new TextEncoder();

  function b64(s) { var bin = atob(s), out = new Uint8Array(bin.length); for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i); return out; }
  function b64of(bytes) { var s = ""; bytes.forEach(function (b) { s += String.fromCharCode(b); }); return btoa(s); }
  function hex(bytes) { return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join(""); }
  function concat() {
    var n = 0, parts = Array.prototype.slice.call(arguments);
    parts.forEach(function (p) { n += p.length; });
    var out = new Uint8Array(n), o = 0;
    parts.forEach(function (p) { out.set(p, o); o += p.length; });
    return out;
  }
  function equal(a, b) { if (a.length !== b.length) return false; for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false; return true; }
  async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }

  /* RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or null when the proof has the wrong length. */
  async function rootFromProof(index, size, leaf, proof) {
    if (index >= size) return null;
    var fn = index, sn = size - 1, r = leaf;
    for (var i = 0; i < proof.length; i++) {
      var p = proof[i];
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat([1], p, r));
        if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
      } else {
        r = await sha256(concat([1], r, p));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  async function keyId(name, pub) { return (await sha256(concat(enc.encode(name), [0x0a, 0x01], pub))).slice(0, 4); }
  async function ed25519(pub, sig, msg) {
    var key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
  }

  function parseNote(note) {
    var cut = note.indexOf("\n\n");
    if (cut < 0) return null;
    var body = note.slice(0, cut + 1), lines = body.split("\n");
    var sigs = note.slice(cut + 2).split("\n").filter(function (l) { return l.length; }).map(function (l) {
      var m = /^\u2014 (\S+) (\S+)$/.exec(l);
      return m ? { name: m[1], bytes: b64(m[2]) } : null;
    });
    return { body: body, origin: lines[0], size: Number(lines[1]), root: lines[2], sigs: sigs };
  }

  /* The witnesses the service publishes (GET /v1/ledger/witnesses: [{name, vkey}] and a quorum); a service
     without witnesses (404 or an empty list) leaves any cosignature line reported as unverified. */
  async function witnessList() {
    var r = await Esc.call("GET", "/v1/ledger/witnesses");
    if (!r.ok || !r.body || !Array.isArray(r.body.witnesses)) return { vkeys: [], quorum: 0 };
    return { vkeys: r.body.witnesses.map(function (w) { return w.vkey; }), quorum: Number(r.body.quorum) || 0 };
  }

  async function cosignatures(parsed, logName) {
    var list = await witnessList(), keys = {}, vkeys = list.vkeys;
    for (var i = 0; i < vkeys.length; i++) {  // name+hex8(key id)+base64(alg ‖ key)
      var parts = vkeys[i].split("+"); if (parts.length !== 3) continue;
      var raw = b64(parts[2]);
      keys[parts[0] + "/" + parts[1]] = { alg: raw[0], pub: raw.slice(1) };
    }
    var verified = 0, present = 0;
    for (var j = 0; j < parsed.sigs.length; j++) {
      var s = parsed.sigs[j];
      if (!s || s.name === logName || s.bytes.length !== 76) continue;
      present++;
      var k = keys[s.name + "/" + hex(s.bytes.slice(0, 4))];
      if (!k || k.alg !== 0x04) continue;  // cosignature/v1 keys carry algorithm byte 0x04
      var ts = s.bytes.slice(4, 12), t = 0n;
      ts.forEach(function (b) { t = t * 256n + BigInt(b); });
      var msg = enc.encode("cosignature/v1\ntime " + t.toString() + "\n" + parsed.body);
      if (await ed25519(k.pub, s.bytes.slice(12), msg)) verified++;
      else return { bad: s.name };
    }
    return { present: present, verified: verified, quorum: list.quorum };
  }

  async function get(path) {
    var r = await Esc.call("GET", path);
    if (!r.ok) throw new Error(path.split("?")[0] + ": " + ((r.body && r.body.error && r.body.error.code) || r.status));
    return r.body;
  }

  async function receipt(seq) {
    try {
      var cp = null;
      for (var i = 0; i < 30; i++) {  // a new entry is in a signed checkpoint within a few seconds
        cp = await get("/v1/ledger/checkpoint");
        if (cp.tree_size > seq) break;
        await Esc.sleep(1000);
      }
      if (!cp || cp.tree_size <= seq) return { ok: false, reason: Esc.t("vf_not_yet") };
      var entry = await get("/v1/ledger/entries/" + seq);
      var proof = await get("/v1/ledger/entries/" + seq + "/proof?tree_size=" + cp.tree_size);
      var key = await get("/v1/ledger/public-key");
      var leaf = await sha256(concat([0], enc.encode(entry.canonical)));
      if (b64of(leaf) !== entry.leaf_hash || b64of(leaf) !== proof.leaf_hash) return { ok: false, reason: Esc.t("vf_leaf") };
      if (proof.leaf_index !== seq || proof.tree_size !== cp.tree_size) return { ok: false, reason: Esc.t("vf_proof") };
      var root = await rootFromProof(seq, cp.tree_size, leaf, proof.proof.map(b64));
      if (!root || b64of(root) !== cp.root_hash) return { ok: false, reason: Esc.t("vf_proof") };
      var note = parseNote(cp.note);
      if (!note || note.origin !== cp.origin || note.size !== cp.tree_size || note.root !== cp.root_hash)
        return { ok: false, reason: Esc.t("vf_note") };
      var pub = b64(key.public_key), kid = await keyId(cp.origin, pub), signed = false;
      for (var j = 0; j < note.sigs.length; j++) {
        var s = note.sigs[j];
        if (s && s.name === cp.origin && s.bytes.length === 68 && equal(s.bytes.slice(0, 4), kid)) {
          signed = await ed25519(pub, s.bytes.slice(4), enc.encode(note.body));
          if (signed) break;
        }
      }
      if (!signed) return { ok: false, reason: Esc.t("vf_signature") };
      var cos = await cosignatures(note, cp.origin);
      if (cos.bad) return { ok: false, reason: Esc.t("vf_cosignature") + " " + cos.bad };
      if (cos.verified < cos.quorum) return { ok: false, reason: Esc.t("vf_quorum") + " " + cos.verified + "/" + cos.quorum };
      var extra = cos.present ? cos.verified + "/" + cos.present + " " + Esc.t("vf_cosigned") : "";
      return { ok: true, note: Esc.t("vf_in_tree") + " " + cp.tree_size + (extra ? " · " + extra : "") };
    } catch (e) {
      return { ok: false, reason: String(e.message || e) };
    }
  }

  return { receipt: receipt, rootFromProof: rootFromProof };
})();
