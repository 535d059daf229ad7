/* Consumer sign-in (SPEC §8): ask for a code, then exchange phone + code for the session cookie. */
"use strict";
(function () {
  var form = document.getElementById("signin"), status = document.getElementById("signin-status");
  var verification = null;
  function say(text, bad) { status.textContent = text; status.className = "status" + (bad ? " bad" : " good"); }
  document.getElementById("send-code").addEventListener("click", async function () {
    var phone = form.phone.value.trim();
    if (!phone) { say(Esc.t("enter_phone"), true); form.phone.focus(); return; }
    var r = await Esc.call("POST", "/v1/consumers/verifications", { phone: phone });
    if (r.status !== 202) { say((r.body && r.body.error && r.body.error.message) || Esc.t("failed"), true); return; }
    verification = r.body.verification_id;
    say(Esc.t("code_sent"));
    form.code.focus();
  });
  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    if (!verification) { say(Esc.t("send_code_first"), true); return; }
    var body = { phone: form.phone.value.trim(), verification_id: verification, code: form.code.value.trim() };
    if (form.name.value.trim()) body.name = form.name.value.trim();
    var r = await fetch("/app/session", { method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-CSRF-Token": Esc.csrf } });
    if (r.status === 201) { say(Esc.t("signed_in")); location.assign(form.dataset.next || "/app"); return; }
    var data = null; try { data = await r.json(); } catch (e) { }
    say((data && data.error && data.error.message) || Esc.t("failed"), true);
  });
})();
