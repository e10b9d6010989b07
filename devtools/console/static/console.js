// pushrelay developer console: draws the server's JSON (GET /api/state, then server-sent
// events on /api/events) and posts the actions. No framework, no build step.
"use strict";

const ui = {
  state: null,
  expandedThreads: new Set(), // "phoneId|threadId" stacks the user opened
  openWire: new Set(), // wire rows whose details are open (by seq)
  selected: null, // the messageId followed on the wire and the phones
  editing: null, // the messageId whose edit box is open
};

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (value) =>
  String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function simNow() {
  const offset = ui.state && ui.state.simOffset ? ui.state.simOffset : 0;
  return Date.now() / 1000 + offset;
}

function clock(epochSeconds) {
  if (epochSeconds == null) return "";
  return new Date(epochSeconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function isoClock(iso) {
  return iso ? clock(Date.parse(iso) / 1000) : "–";
}

function ago(epochSeconds) {
  const s = Math.max(0, simNow() - epochSeconds);
  if (s < 60) return "now";
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function untilText(iso) {
  if (!iso) return "";
  const minutes = Math.round((Date.parse(iso) - Date.now()) / 60000);
  if (minutes === 0) return "now";
  return minutes > 0 ? `in ${minutes} min` : `${-minutes} min ago`;
}

async function post(path, body, method = "POST") {
  const answer = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    flash(data.error || `HTTP ${answer.status}`);
    throw new Error(data.error || answer.status);
  }
  return data;
}

function flash(text) {
  const status = $("#status");
  status.innerHTML = `<span class="bad">${esc(text)}</span>`;
  setTimeout(() => ui.state && renderStatus(ui.state), 6000);
}

// --- rendering ---------------------------------------------------------------------------------

function renderStatus(s) {
  const parts = [];
  parts.push(s.simulator ? (s.simError ? `<span class="bad">APNs simulator: ${esc(s.simError)}</span>` : "APNs simulator connected") : "no APNs simulator (real APNs)");
  if (s.storageError) parts.push(`<span class="bad">storage: ${esc(s.storageError)}</span>`);
  parts.push(`${s.phones.length} phone(s)`);
  if (s.simOffset) parts.push(`simulator clock ${s.simOffset > 0 ? "+" : ""}${Math.round(s.simOffset / 60)} min`);
  $("#status").innerHTML = parts.join(" · ");
  $("#sim-clock").textContent = s.simOffset ? `simulator: ${clock(simNow())}` : "";
}

function fillUsers(s) {
  for (const select of document.querySelectorAll("select.users")) {
    const keep = select.value;
    select.innerHTML = s.users.map((u) => `<option value="${esc(u.id)}">${esc(u.label)}</option>`).join("");
    if (s.users.some((u) => u.id === keep)) select.value = keep;
  }
  // A sensible default: to someone other than the sender.
  for (const [from, to] of [["#send-from", "#send-to"], ["#call-from", "#call-to"]]) {
    const a = $(from), b = $(to);
    if (a.value && a.value === b.value && s.users.length > 1) {
      b.value = s.users.find((u) => u.id !== a.value).id;
    }
  }
  const phoneSelect = $("#fault-phone");
  const keep = phoneSelect.value;
  phoneSelect.innerHTML = `<option value="">every push</option>` +
    s.phones.map((p) => `<option value="${esc(p.id)}">${esc(p.label)}</option>`).join("");
  if (s.phones.some((p) => p.id === keep)) phoneSelect.value = keep;
  const none = s.users.length < 2;
  for (const id of ["#send-button", "#call-button"]) $(id).disabled = none;
}

function notificationHtml(n, group, index, collapsed) {
  const count = group.notifications.length;
  const more = collapsed && index === 0 && count > 1
    ? `<div class="more-count">${count - 1} more notification${count > 2 ? "s" : ""}</div>` : "";
  const preview = {
    decrypted: "decrypted on the phone",
    fallback: "fallback text: this phone holds no key that opens it",
    plain: "sent as plain text",
  }[n.preview];
  const hl = ui.selected && n.messageId === ui.selected ? " highlight" : "";
  return `<div class="notif${hl}" data-message-id="${esc(n.messageId || "")}" data-preview="${esc(n.preview)}">
    <div class="notif-head"><span class="app-glyph">PR</span><span class="app-name">pushrelay chat</span>
      <span class="when">${esc(ago(n.at))}</span></div>
    <div class="notif-title">${esc(n.title)}${n.replaced ? `<span class="edited">edited</span>` : ""}</div>
    ${n.subtitle ? `<div class="notif-subtitle">${esc(n.subtitle)}</div>` : ""}
    <div class="notif-body">${esc(n.body)}</div>
    ${more}
    <span class="preview ${esc(n.preview)}">${esc(preview)}</span>
  </div>`;
}

function stacksHtml(phone) {
  return phone.screen.groups.map((group) => {
    const key = `${phone.id}|${group.threadId}`;
    const collapsed = !ui.expandedThreads.has(key);
    const count = group.notifications.length;
    const cls = ["stack", collapsed ? "collapsed" : "", count > 1 ? "more" : "", count > 2 ? "many" : ""].join(" ");
    const items = group.notifications.map((n, i) => notificationHtml(n, group, i, collapsed)).join("");
    return `<div class="${cls}" data-stack="${esc(key)}" data-thread-id="${esc(group.threadId)}">${items}</div>`;
  }).join("");
}

function callHtml(phone) {
  const call = phone.screen.call;
  if (!call) return "";
  const initial = (call.caller || "?").trim().charAt(0).toUpperCase();
  return `<div class="call-screen" data-call-id="${esc(call.callId)}">
    <div class="caller">${esc(call.caller)}</div>
    <div class="call-kind">pushrelay Audio…</div>
    <div class="avatar">${esc(initial)}</div>
    <div class="call-buttons">
      <div><button class="decline" data-call-answer="decline" data-phone="${esc(phone.id)}">✕</button><span class="lbl">Decline</span></div>
      <div><button class="accept" data-call-answer="accept" data-phone="${esc(phone.id)}">✆</button><span class="lbl">Accept</span></div>
    </div>
  </div>`;
}

function timelineHtml(phone) {
  const marks = phone.screen.marks;
  if (!marks.length) return `<div class="timeline"><div class="axis"></div><span class="label">no silent pushes yet</span></div>`;
  const first = Math.min(...marks.map((m) => m.at));
  const last = Math.max(simNow(), ...marks.map((m) => m.at));
  const span = Math.max(1, last - first);
  const dots = marks.map((m) => {
    const left = 8 + ((m.at - first) / span) * 268;
    const what = { renewal: "renewal wake", withdraw: `withdraw message ${m.detail}`, tokenProof: "token proof" }[m.mark];
    return `<span class="mark ${esc(m.mark)}" style="left:${left.toFixed(0)}px" title="${esc(what)} at ${esc(clock(m.at))}" data-mark="${esc(m.mark)}"></span>`;
  }).join("");
  return `<div class="timeline" title="silent (background) pushes"><div class="axis"></div>${dots}</div>`;
}

function factsHtml(phone, rules) {
  const key = phone.key;
  let keyText;
  if (!key.expiresAt) keyText = `<span class="bad">no preview key</span>: the fallback text shows`;
  else if (key.appHolds) keyText = `live until ${esc(isoClock(key.expiresAt))} (${esc(untilText(key.expiresAt))})`;
  else keyText = `<span class="bad">expired ${esc(untilText(key.expiresAt))}</span>`;
  if (key.expiresAt && !key.canDecrypt) keyText += ` · the console does not hold this phone's key`;
  if (key.expiresAt && key.canDecrypt && !key.phoneHolds) keyText += ` · gone from the phone's key storage too`;
  const wake = phone.nextWake
    ? `${esc(isoClock(phone.nextWake))} sweep bucket (${esc(untilText(phone.nextWake))})`
    : `not scheduled${phone.stale ? " (stale: no longer woken)" : ""}`;
  const b = phone.budget;
  const budget = `${b.used} of ${b.max} this hour` +
    (b.nextAllowedAt && Date.parse(b.nextAllowedAt) > Date.now()
      ? `, next at ${esc(isoClock(b.nextAllowedAt))}` : ", one may go now");
  const tokens = phone.tokens.map((t) =>
    `${esc(t.kind)} <span class="mono">${esc(t.token)}</span>${t.registered ? "" : ` <span class="bad">removed</span>`}` +
    (t.lastResult ? ` <span class="mono">(${esc(t.lastResult)})</span>` : "")).join("<br>");
  return `<dl class="facts">
    <dt>user</dt><dd>${esc(phone.userLabel)}</dd>
    <dt>tokens</dt><dd>${tokens}</dd>
    <dt>preview key</dt><dd data-fact="key">${keyText}</dd>
    <dt>next renewal wake</dt><dd data-fact="wake">${wake}</dd>
    <dt>background budget</dt><dd data-fact="budget" title="renewal and withdraw pushes share it: ${rules.maxPerHour} per hour, ${rules.minSpacingMinutes} min apart">${budget}</dd>
  </dl>`;
}

// What the reference device's app did (its event log), as a line a developer reads.
function appEventText(e) {
  const short = (id) => (id ? String(id).slice(0, 8) + "…" : "");
  switch (e.what) {
    case "signedIn": return `signed in as ${e.subject}`;
    case "keyUploaded": return `uploaded a fresh preview key (pushrelay: until ${isoClock(e.keyExpiresAt)})`;
    case "registered": return `registered its ${e.kind} token` + (e.key ? ` (key ${e.key})` : "");
    case "banner": return `showed “${e.title}: ${e.body}” (${e.decrypted ? "decrypted" : "fallback text"})`;
    case "withdrawn": return `withdrew message ${e.messageId || "?"}` + (e.reconciled ? " (deleted since; no withdraw push came)" : "");
    case "renewalWake": return "woke up for a renewal";
    case "proofRequired": return `was asked to prove its ${e.kind} token`;
    case "proofCompleted": return `proved its ${e.kind} token`;
    case "proofRefused": return `proof refused for its ${e.kind} token`;
    case "voipHeld": return "PushKit token held by another user until the proof";
    case "callReported": return `reported a call from ${e.callerName || "?"} to CallKit`;
    case "placeholderCall": return "reported an unreadable VoIP push as a call and ended it";
    case "callAnswered": return `answered call ${short(e.uuid)}`;
    case "callEnded": return `ended call ${short(e.uuid)}`;
    case "notDelivered": return `iOS did not hand it a push (${e.reason || e.pushType || "?"})`;
    case "deregistered": return `deleted registration ${short(e.deviceId)}`;
    default: return e.what;
  }
}

function appLogHtml(phone) {
  if (!phone.appLog) return "";
  const rows = phone.appLog.slice(0, 5).map((e) =>
    `<li data-app-event="${esc(e.what)}"><span class="mono">${esc(isoClock(e.at))}</span> ${esc(appEventText(e))}</li>`).join("");
  return `<div class="app-log" title="the reference device's event log, newest first"><b>the app</b> <span class="hint">(docs/ios.md, run by the reference device)</span><ul>${rows}</ul></div>`;
}

function renderPhones(s) {
  const root = $("#phones");
  if (!s.phones.length) {
    root.innerHTML = `<p class="empty">No phones yet: add one on the left (or register a device through the API).</p>`;
    return;
  }
  const now = new Date();
  const time = now.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
  const date = now.toLocaleDateString("en-GB", { weekday: "long", day: "numeric", month: "long" });
  root.innerHTML = s.phones.map((p) => `
    <div class="phone" data-phone-id="${esc(p.id)}" data-user="${esc(p.userLabel)}" data-source="${esc(p.source)}">
      <div class="phone-title">${esc(p.label)} <span class="src">${p.source === "reference" ? "reference device" : "registered through the API"}</span></div>
      <div class="device"><div class="screen">
        <div class="island"></div>
        <div class="statusbar"><span>${esc(time)}</span><span>▮▮▮ ◔</span></div>
        <div class="lock-glyph">🔒</div>
        <div class="lock-date">${esc(date)}</div>
        <div class="lock-time">${esc(time)}</div>
        <div class="stacks">${stacksHtml(p)}</div>
        ${callHtml(p)}
        <div class="dock"><span class="round">🔦</span>
          <div class="app-icon" title="the app icon's badge (aps.badge)">PR${p.screen.badge ? `<span class="badge" data-badge>${esc(p.screen.badge)}</span>` : ""}</div>
          <span class="round">📷</span></div>
        <div class="home-bar"></div>
      </div></div>
      ${timelineHtml(p)}
      ${factsHtml(p, s.rules)}
      ${appLogHtml(p)}
      <div class="phone-actions">
        <button class="danger" data-uninstall="${esc(p.id)}" title="APNs answers 410 Unregistered to the next push to its tokens">Delete the app (APNs: Unregistered)</button>
      </div>
    </div>`).join("");
}

function stepsHtml(w) {
  if (!w.link) {
    return `<span class="step">${w.what === "renewal wake" ? "renewal (recorded on the device row, not the delivery log)" : "not in the delivery log"}</span>`;
  }
  const records = w.log;
  if (!records.length) return `<span class="step pending">reading the delivery log…</span>`;
  const r = records.find((d) => d.thisRequest) || records[records.length - 1];
  const answer = w.status != null ? `${w.status}${w.reason ? " " + w.reason : ""}` : w.outcome;
  const settled = r.state === "pending" ? "pending"
    : r.state === "released" ? "released: Event Grid redelivers"
    : r.state;
  const cls = { delivered: "done", failed: "failed", released: "released", pending: "pending", skipped: "failed" }[r.state] || "";
  const attempts = r.attempts > 1 ? ` after ${r.attempts} attempts` : "";
  return `<div class="steps" data-log-state="${esc(r.state)}">
    <span class="step done" title="the claim in the deliveries table">claimed ${esc(isoClock(r.claimedAt))}</span>
    <span class="step done">sent ${esc(clock(w.at))}</span>
    <span class="step ${w.status === 200 ? "done" : "failed"}">answered ${esc(answer)}</span>
    <span class="step ${cls}">settled: ${esc(settled)}${esc(attempts)}${r.completedAt ? " " + esc(isoClock(r.completedAt)) : ""}</span>
  </div>`;
}

function answerClass(w) {
  if (w.status === 200) return "ok";
  if (w.status == null || w.status >= 500 || w.status === 429) return "warn";
  return "bad";
}

function renderWire(s) {
  const body = $("#wire tbody");
  if (!s.wire.length) {
    body.innerHTML = `<tr><td colspan="8" class="empty">Nothing on the wire yet.</td></tr>`;
    return;
  }
  body.innerHTML = s.wire.map((w) => {
    const messageId = w.link ? w.link.messageId : "";
    const hl = ui.selected && messageId === ui.selected ? " highlight" : "";
    const answer = w.outcome === "answered" ? `${w.status}${w.reason ? " " + w.reason : ""}` : `${w.outcome}${w.reason ? " " + w.reason : ""}`;
    const fault = w.faultId ? `<span class="fault" title="scripted fault ${esc(w.faultId)}">fault</span>` : "";
    const row = `<tr class="req${hl}" data-seq="${esc(w.seq)}" data-message-id="${esc(messageId)}" data-status="${esc(w.status)}" data-fault="${w.faultId ? "yes" : ""}">
      <td class="mono">${esc(w.seq)}</td>
      <td class="mono">${esc(clock(w.at))}</td>
      <td class="to">${esc(w.phone || w.user || "unknown device")}<br><span class="mono">${esc(w.token)}</span></td>
      <td class="push">${esc(w.pushType)} · ${esc(w.priority || "10")}<br><span class="hint">${esc(w.environment)}</span></td>
      <td class="mono">${esc(w.collapseId || "")}</td>
      <td>${esc(w.what)}</td>
      <td><span class="ans ${answerClass(w)}">${esc(answer)}</span>${fault}</td>
      <td>${stepsHtml(w)}</td>
    </tr>`;
    if (!ui.openWire.has(String(w.seq))) return row;
    const headers = { "apns-push-type": w.pushType, "apns-priority": w.priority, "apns-topic": w.topic,
      "apns-collapse-id": w.collapseId, "apns-expiration": w.expiration };
    const detail = `<tr class="details"><td colspan="8"><div class="detail-grid">
      <div><b>request</b> (connection ${esc(w.connectionId)}, stream ${esc(w.streamId)}, ${esc(w.size)} bytes, apns-id <span class="mono">${esc(w.apnsId)}</span>)
        <pre>${esc(JSON.stringify(headers, null, 2))}\n${esc(JSON.stringify(w.payload, null, 2))}</pre></div>
      <div><b>delivery log</b>${w.link ? ` (user ${esc(w.user)}, thread <span class="mono">${esc(w.link.threadId)}</span>, message <span class="mono">${esc(w.link.messageId)}</span>, ${esc(w.link.kind)})` : ""}
        <pre>${esc(JSON.stringify(w.log, null, 2))}</pre></div>
    </div></td></tr>`;
    return row + detail;
  }).join("");
}

function renderMessages(s) {
  $("#messages").innerHTML = s.messages.map((m) => {
    const events = m.events.map((e) =>
      `<span class="${e.status === 202 ? "ok" : "bad"}" data-event-status="${esc(e.status)}">${esc(e.type)} (${esc(e.schema)}) → ${esc(e.status ?? "no answer")}</span>` +
      (e.status !== 202 ? ` <button class="quiet" data-redeliver="${esc(e.eventId)}">redeliver</button>` : "")).join("<br>");
    const sel = ui.selected === m.messageId ? " selected" : "";
    const editing = ui.editing === m.messageId
      ? `<div class="edit-row"><input data-edit-input="${esc(m.messageId)}" value="${esc(m.text)}"><button data-edit-save="${esc(m.messageId)}">Save</button></div>` : "";
    const buttons = m.state === "deleted" ? "" :
      `<button class="quiet" data-edit="${esc(m.messageId)}">Edit</button> <button class="danger" data-delete="${esc(m.messageId)}">Delete</button>`;
    return `<li class="${esc(m.state)}${sel}" data-message="${esc(m.messageId)}">
      <span class="who">${esc(m.from)} → ${esc(m.to)}</span> <span class="mono hint">${esc(m.messageId)}</span> ${esc(m.state === "sent" ? "" : m.state)}
      <span class="text">${esc(m.text)}</span>
      <span class="events">${events}</span>
      <div>${buttons}</div>${editing}
    </li>`;
  }).join("");
  $("#calls").innerHTML = s.calls.map((c) =>
    `<li><span class="who">📞 ${esc(c.from)} → ${esc(c.to)}</span>
      <span class="events"><span class="${c.event.status === 202 ? "ok" : "bad"}">IncomingCall (${esc(c.event.schema)}) → ${esc(c.event.status ?? "no answer")}</span></span></li>`).join("");
}

function renderActivity(s) {
  $("#activity").innerHTML = s.activity.map((a) =>
    `<li class="${esc(a.level)}"><span class="t">${esc(isoClock(a.at))}</span>${esc(a.text)}</li>`).join("");
  $("#faults").innerHTML = s.faults.map((f) =>
    `<li data-fault-id="${esc(f.id)}">${esc(f.description)} · hit ${esc(f.hits)} time(s)</li>`).join("");
}

function render(s) {
  ui.state = s;
  // Leave an open edit box alone while the user types in it.
  const typing = document.activeElement && document.activeElement.matches("[data-edit-input]");
  renderStatus(s);
  fillUsers(s);
  renderPhones(s);
  renderWire(s);
  if (!typing) renderMessages(s);
  renderActivity(s);
  document.body.dataset.ready = "true";
}

// --- actions -----------------------------------------------------------------------------------

function formBody(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") body[el.name] = el.checked;
    else if (el.type === "number") body[el.name] = Number(el.value);
    else body[el.name] = el.value;
  }
  return body;
}

function onSubmit(selector, path, after) {
  $(selector).addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      const answer = await post(path, formBody(form));
      if (after) after(form, answer);
    } catch (e) {
      /* shown by flash() */
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

onSubmit("#form-phone", "/api/phones", (form) => { form.reset(); });
onSubmit("#form-send", "/api/messages", (form, answer) => {
  $("#send-text").value = "";
  ui.selected = answer.messageId;
});
onSubmit("#form-call", "/api/calls");
onSubmit("#form-fault", "/api/faults");

$("#clear-faults").addEventListener("click", () => post("/api/faults", {}, "DELETE").catch(() => {}));
$("#run-sweep").addEventListener("click", () => post("/api/renewal-sweep").catch(() => {}));
$("#clock-reset").addEventListener("click", () => post("/api/clock", { reset: true }).catch(() => {}));
for (const button of document.querySelectorAll("[data-advance]")) {
  button.addEventListener("click", () => post("/api/clock", { seconds: Number(button.dataset.advance) }).catch(() => {}));
}

document.addEventListener("click", async (event) => {
  const t = event.target.closest("button, .stack, tr.req, li[data-message]");
  if (!t) return;
  const d = t.dataset;
  if (d.uninstall) return post(`/api/phones/${d.uninstall}/uninstall`).catch(() => {});
  if (d.callAnswer) return post(`/api/phones/${d.phone}/call`, { answer: d.callAnswer }).catch(() => {});
  if (d.redeliver) return post(`/api/events/${d.redeliver}/redeliver`).catch(() => {});
  if (d.delete) return post(`/api/messages/${d.delete}/delete`, { schema: $("#send-schema").value }).catch(() => {});
  if (d.edit) { ui.editing = d.edit; render(ui.state); const box = $(`[data-edit-input="${d.edit}"]`); if (box) box.focus(); return; }
  if (d.editSave) {
    const text = $(`[data-edit-input="${d.editSave}"]`).value;
    ui.editing = null;
    return post(`/api/messages/${d.editSave}/edit`, { text, schema: $("#send-schema").value }).catch(() => {});
  }
  if (d.stack) {
    if (ui.expandedThreads.has(d.stack)) ui.expandedThreads.delete(d.stack); else ui.expandedThreads.add(d.stack);
    return render(ui.state);
  }
  if (t.matches("tr.req")) {
    if (ui.openWire.has(d.seq)) ui.openWire.delete(d.seq); else ui.openWire.add(d.seq);
    if (d.messageId) ui.selected = d.messageId;
    return render(ui.state);
  }
  if (d.message) {
    ui.selected = ui.selected === d.message ? null : d.message;
    return render(ui.state);
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches("[data-edit-input]")) {
    event.preventDefault();
    $(`[data-edit-save="${event.target.dataset.editInput}"]`).click();
  }
});

// --- live updates ------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("state", (event) => render(JSON.parse(event.data)));
  source.onerror = () => { $("#status").innerHTML = `<span class="bad">reconnecting to the console…</span>`; };
}

connect();
// Relative times ("2m ago", "in 30 min") move on without a server change.
setInterval(() => ui.state && !document.activeElement.matches("input, textarea, select") && render(ui.state), 30000);
