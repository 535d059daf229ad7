/* The regulator's desk: the live alert feed (long-poll with a cursor), acknowledge and resolve in place. */
"use strict";
(function () {
  var list = document.getElementById("alerts"), empty = document.getElementById("alerts-empty");
  var names = JSON.parse(list.dataset.names || "{}");  // every merchant the feed names, as the desk was rendered
  document.querySelectorAll("#merchants a[href^='/regulator/merchants/']").forEach(function (a) {
    names[a.getAttribute("href").split("/").pop()] = a.textContent;
  });
  var after = null;

  async function learnNames() {  // and the directory, for merchants whose first alert comes later
    var r = await Esc.call("GET", "/v1/merchants?limit=200");
    if (r.ok) (r.body.items || []).forEach(function (m) { if (!names[m.id]) names[m.id] = m.name; });
  }

  function codeName(c) { return c ? Esc.t("code_" + c) : "—"; }

  function render(a) {
    var li = list.querySelector('[data-id="' + CSS.escape(a.id) + '"]');
    var fresh = !li;
    if (fresh) li = Esc.el("li", { "class": "alert", "data-id": a.id, "data-merchant": a.merchant_id });
    li.textContent = "";
    li.dataset.status = a.status;
    li.dataset.to = a.to_code || "";
    var head = Esc.el("p");
    var link = Esc.el("a", { href: "/regulator/merchants/" + a.merchant_id }, names[a.merchant_id] || a.merchant_id);
    head.append(link, " · " + Esc.t("kind_" + a.kind) + " ", Esc.el("span", { "class": "code code-" + (a.to_code || "none") }, codeName(a.from_code) + " → " + codeName(a.to_code)));
    li.appendChild(head);
    var reasons = (a.reasons || []).map(function (r) { return Esc.t("ind_" + r.indicator) + " " + r.value; }).join("; ");
    li.appendChild(Esc.el("p", { "class": "muted" }, Esc.when(a.created_at) + (reasons ? " · " + reasons : "")));
    var st = Esc.el("p", { "class": "astatus" }, Esc.t("astatus_" + a.status) + (a.finding ? " · " + a.finding : ""));
    li.appendChild(st);
    if (a.status === "open") {
      li.appendChild(Esc.el("button", { type: "button", "data-act": "acknowledge", "data-id": a.id }, Esc.t("acknowledge")));
    }
    if (a.status !== "resolved") {
      var id = "finding-" + a.id;
      var f = Esc.el("div", { "class": "inline" });
      f.append(Esc.el("label", { "for": id }, Esc.t("finding")), Esc.el("input", { id: id, name: "finding" }),
               Esc.el("button", { type: "button", "data-act": "resolve", "data-id": a.id }, Esc.t("resolve")));
      li.appendChild(f);
    }
    if (fresh) list.prepend(li);
    empty.hidden = true;
  }

  learnNames().finally(function () {
  Esc.poll(function () { return "/v1/alerts?limit=100&wait=20" + (after !== null ? "&after=" + encodeURIComponent(after) : ""); },
           function (body) {
             (body.items || []).forEach(render);
             if (body.next_cursor !== null && body.next_cursor !== undefined) after = body.next_cursor;
           });
  });

  list.addEventListener("click", async function (ev) {
    var b = ev.target.closest("button[data-act]");
    if (!b) return;
    var li = b.closest("li"), body;
    if (b.dataset.act === "resolve") {
      var finding = li.querySelector("input[name=finding]").value.trim();
      if (!finding) { li.querySelector("input[name=finding]").focus(); return; }
      body = { finding: finding };
    }
    b.disabled = true;
    var r = await Esc.call("POST", "/v1/alerts/" + encodeURIComponent(b.dataset.id) + "/" + b.dataset.act, body);
    if (r.ok) render(r.body);
    else { b.disabled = false; li.querySelector(".astatus").textContent = (r.body && r.body.error && r.body.error.message) || Esc.t("failed"); }
  });
})();
