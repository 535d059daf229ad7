/* The consumer's app: the live confirmation inbox, Confirm / Reject, receipts and their Verify button. */
"use strict";
(function () {
  var inbox = document.getElementById("inbox"), empty = document.getElementById("inbox-empty");
  var answered = {};

  function cardInfo(cardId) {
    var c = document.querySelector('[data-card="' + CSS.escape(cardId) + '"]');
    return c ? { type: c.dataset.type, merchant: c.dataset.merchant } : { type: "count", merchant: "" };
  }

  function askElement(r) {
    var info = cardInfo(r.card_id);
    var a = Esc.el("article", { "class": "ask", "data-id": r.id, "data-card-id": r.card_id });
    a.appendChild(Esc.el("h3", {}, info.merchant || r.merchant_id));
    var p = Esc.el("p");
    p.append(Esc.t("ask_units_label") + ": ", Esc.el("strong", {}, Esc.units(info.type, r.units)),
             " · " + Esc.t("ask_amount_label") + ": ", Esc.el("strong", {}, Esc.yuan(r.release_amount !== null ? r.release_amount : r.hold_amount)));
    a.appendChild(p);
    a.appendChild(Esc.el("p", { "class": "muted" }, Esc.t("answer_by") + " " + Esc.when(r.expires_at)));
    var actions = Esc.el("div", { "class": "actions" });
    actions.appendChild(Esc.el("button", { type: "button", "class": "confirm", "data-action": "confirm", "data-id": r.id }, Esc.t("confirm")));
    actions.appendChild(Esc.el("button", { type: "button", "class": "reject", "data-action": "reject", "data-id": r.id }, Esc.t("reject")));
    a.appendChild(actions);
    a.appendChild(Esc.el("p", { "class": "status", role: "status", "aria-live": "polite" }));
    return a;
  }

  function showInbox(items) {
    var pending = {};
    items.forEach(function (r) { pending[r.id] = r; });
    Array.prototype.forEach.call(inbox.querySelectorAll(".ask"), function (a) {
      if (!pending[a.dataset.id] && !answered[a.dataset.id]) a.remove();
    });
    items.forEach(function (r) {
      if (!inbox.querySelector('[data-id="' + CSS.escape(r.id) + '"]')) {
        inbox.appendChild(askElement(r));
        refreshCard(r.card_id);  // the hold lowers what is available
      }
    });
    empty.hidden = inbox.querySelector(".ask") !== null;
  }

  if (inbox) {
    Esc.poll(function () { return "/v1/consumers/me/redemptions?status=pending&limit=50&wait=20"; },
             function (body) { showInbox(body.items || []); });
  }

  /* After an answer the card's balance has changed: show it as the API has it now. */
  async function refreshCard(cardId) {
    var box = cardId && document.querySelector('[data-card="' + CSS.escape(cardId) + '"]');
    if (!box) return;
    var r = await Esc.call("GET", "/v1/cards/" + encodeURIComponent(cardId));
    if (!r.ok) return;
    var b = r.body.balance;
    box.querySelector(".balance").textContent = Esc.yuan(b.escrow);
    box.querySelector(".available").textContent = Esc.yuan(b.available);
    box.querySelector(".units-left").textContent = Esc.units(r.body.type, b.units_left);
  }

  function addReceipt(seq, what) {
    var list = document.getElementById("receipts"), tpl = document.getElementById("receipt-tpl");
    if (!list || !tpl) return;
    var li = tpl.content.firstElementChild.cloneNode(true);
    li.dataset.seq = seq;
    li.querySelector(".what").textContent = what + " · " + Esc.t("entry") + " #" + seq;
    li.querySelector(".verify").dataset.seq = seq;
    list.prepend(li);
  }

  document.addEventListener("click", async function (ev) {
    var b = ev.target.closest("button[data-action]");
    if (b) {
      var id = b.dataset.id, action = b.dataset.action, ask = b.closest(".ask");
      var status = ask.querySelector(".status");
      ask.querySelectorAll("button").forEach(function (x) { x.disabled = true; });
      answered[id] = true;
      var r = await Esc.call("POST", "/v1/redemptions/" + encodeURIComponent(id) + "/" + action);
      if (r.ok) {
        status.textContent = Esc.t("rstatus_" + r.body.status);
        status.className = "status " + (r.body.status === "confirmed" ? "good" : "");
        ask.querySelector(".actions").remove();
        refreshCard(ask.dataset.cardId);
        if (r.body.status === "confirmed" && r.body.ledger_seq !== null && r.body.ledger_seq !== undefined) {
          addReceipt(r.body.ledger_seq, (ask.querySelector("h3") || {}).textContent + " · " + Esc.yuan(r.body.release_amount));
        }
      } else {
        status.textContent = (r.body && r.body.error && r.body.error.message) || Esc.t("failed");
        status.className = "status bad";
        ask.querySelectorAll("button").forEach(function (x) { x.disabled = false; });
      }
      return;
    }
    var v = ev.target.closest("button.verify");
    if (v) {
      var verdict = v.parentElement.querySelector(".verdict");
      v.disabled = true;
      verdict.textContent = Esc.t("verifying");
      verdict.className = "verdict";
      var result = await Verify.receipt(Number(v.dataset.seq));
      verdict.textContent = result.ok ? Esc.t("verified") + (result.note ? " · " + result.note : "")
                                      : Esc.t("verify_failed") + ": " + result.reason;
      verdict.className = "verdict " + (result.ok ? "good" : "bad");
      v.disabled = false;
    }
  });
})();
