/* The merchant's counter: find a card (typed or scanned from the consumer's card QR), ask for units, show the
   ask's QR code (made by the server) and watch it turn confirmed, rejected, cancelled or expired. */
"use strict";
(function () {
  var find = document.getElementById("find"), askForm = document.getElementById("ask");
  var err = document.getElementById("counter-error"), card = null, watching = 0;
  function fail(r) { err.textContent = (r.body && r.body.error && r.body.error.message) || Esc.t("failed"); }

  async function lookUp(id) {
    err.textContent = "";
    var r = await Esc.call("GET", "/v1/cards/" + encodeURIComponent(id));
    if (!r.ok) { document.getElementById("card-view").hidden = true; fail(r); return; }
    card = r.body;
    document.getElementById("cv-type").textContent = Esc.t("type_" + card.type);
    document.getElementById("cv-available").textContent = Esc.yuan(card.balance.available);
    document.getElementById("cv-units").textContent = Esc.units(card.type, card.balance.units_left);
    document.getElementById("cv-status").textContent = Esc.t("cstatus_" + card.status);
    document.getElementById("units-label").textContent = Esc.t(card.type === "stored_value" ? "ask_amount_fen" : card.type === "count" ? "ask_uses" : "ask_periods");
    document.getElementById("card-view").hidden = false;
    document.getElementById("ask-view").hidden = true;
    askForm.units.focus();
  }

  find.addEventListener("submit", function (ev) { ev.preventDefault(); lookUp(find.card_id.value.trim()); });

  askForm.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    if (!card) return;
    var n = parseInt(askForm.units.value, 10), body = {};
    body[card.type === "stored_value" ? "amount" : card.type === "count" ? "uses" : "periods"] = n;
    var r = await Esc.call("POST", "/v1/cards/" + encodeURIComponent(card.id) + "/redemptions", body);
    if (!r.ok) { fail(r); return; }
    err.textContent = "";
    var rdm = r.body, view = document.getElementById("ask-view"), status = document.getElementById("ask-status");
    document.getElementById("ask-qr").src = "/merchant/qr/" + encodeURIComponent(rdm.id) + ".svg";
    document.getElementById("ask-link").href = "/app/r/" + encodeURIComponent(rdm.id);
    document.getElementById("ask-link").textContent = location.origin + "/app/r/" + rdm.id;
    status.textContent = Esc.t("rstatus_pending") + " · " + Esc.yuan(rdm.release_amount !== null ? rdm.release_amount : rdm.hold_amount);
    status.className = "status";
    view.hidden = false;
    var mine = ++watching;
    Esc.poll(function () { return "/v1/redemptions/" + encodeURIComponent(rdm.id) + "?wait=20"; }, function (b) {
      if (mine !== watching) return false;
      if (b.status !== "pending") {
        status.textContent = Esc.t("rstatus_" + b.status);
        status.className = "status " + (b.status === "confirmed" ? "good" : "bad");
        return false;
      }
    });
  });

  // Scanning the consumer's card QR: the camera through BarcodeDetector where the browser has it.
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    var scan = document.getElementById("scan"), video = document.getElementById("camera");
    scan.hidden = false;
    scan.addEventListener("click", async function () {
      try {
        var detector = new BarcodeDetector({ formats: ["qr_code"] });
        var stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
        video.srcObject = stream; video.hidden = false; await video.play();
        for (var i = 0; i < 600; i++) {  // about a minute
          var codes = await detector.detect(video);
          if (codes.length) { find.card_id.value = codes[0].rawValue; break; }
          await Esc.sleep(100);
        }
        stream.getTracks().forEach(function (tr) { tr.stop(); });
        video.hidden = true;
        if (find.card_id.value) lookUp(find.card_id.value.trim());
      } catch (e) { err.textContent = Esc.t("camera_failed"); }
    });
  }
})();
