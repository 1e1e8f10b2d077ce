// Palisade web UI script: streamed chat replies and live approvals.
// Hand-written and small on purpose; served from /assets/app.js (no inline script, the
// Content-Security-Policy forbids it). Text from agents and models is only ever
// inserted with textContent, never as HTML.
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  // Characters that reorder what follows them on screen (bidi controls) shown as
  // markers, ⟨U+202E⟩, as the server shows them (pages/mod.rs, shown).
  function shown(text) {
    return String(text).replace(/[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g, function (c) {
      return "⟨U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟩";
    });
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = shown(text);
    return node;
  }

  // An error reply: Palisade's words without the "palisade: " that marks them in chat
  // apps, `backticked` commands as code (as the server renders them, chat.rs).
  function fillError(node, text) {
    node.textContent = "";
    const plain = shown(text.startsWith("palisade: ") ? text.slice("palisade: ".length) : text);
    plain.split("`").forEach(function (part, index) {
      node.appendChild(index % 2 === 1 ? el("code", null, part) : document.createTextNode(part));
    });
  }

  // ---------- Chat ----------
  const composer = document.getElementById("composer");
  const messages = document.getElementById("messages");

  function scrollDown() {
    if (messages) messages.scrollTop = messages.scrollHeight;
  }

  function bubble(kind, text) {
    const wrap = el("div", "msg " + kind);
    const body = el("div", "bubble", text);
    wrap.appendChild(body);
    messages.appendChild(wrap);
    const empty = document.getElementById("empty-chat");
    if (empty) empty.remove();
    scrollDown();
    return { wrap: wrap, body: body };
  }

  function showChatError(text) {
    const box = document.getElementById("chat-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  // Tells palisade the reply to message `id` was shown, so it is not offered again as
  // unseen. Best effort: a failure only means it is offered again.
  function acknowledge(id) {
    fetch("/chat/messages/" + encodeURIComponent(id) + "/delivered", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
    }).catch(function () {});
  }

  async function send(text) {
    const agent = composer.dataset.agent;
    const input = document.getElementById("message");
    const button = document.getElementById("send");
    const status = document.getElementById("chat-status");
    showChatError("");
    button.disabled = true;
    status.textContent = "sending…";
    const mine = bubble("user", text);
    let reply = null;
    let tools = null;
    let gotReply = false;
    let messageId = null;
    try {
      const response = await fetch("/chat/" + encodeURIComponent(agent) + "/send", {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRF-Token": csrf,
          Accept: "application/x-ndjson",
        },
        body: JSON.stringify({ text: text }),
      });
      if (!response.ok || !response.body) {
        let message = "the host answered " + response.status;
        try {
          const body = await response.json();
          if (body && body.message) message = body.message;
        } catch (_) { /* not JSON */ }
        mine.wrap.remove();
        showChatError(message);
        status.textContent = "";
        return;
      }
      input.value = "";
      reply = bubble("agent streaming", "");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffered += decoder.decode(chunk.value, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (!line) continue;
          let event;
          try { event = JSON.parse(line); } catch (_) { continue; }
          switch (event.type) {
            case "accepted":
              messageId = event.message_id;
              status.textContent = "accepted (message #" + event.message_id + "); waiting for " + agent + "…";
              break;
            case "started":
              status.textContent = agent + " is working on it…";
              break;
            case "text_delta":
              reply.body.textContent += shown(event.text);
              reply.wrap.dataset.deltas = String(Number(reply.wrap.dataset.deltas || 0) + 1);
              status.textContent = agent + " is answering…";
              break;
            case "tool_call":
              if (!tools) {
                tools = el("div", "tools");
                reply.wrap.appendChild(tools);
              }
              tools.appendChild(el("span", "pill warn", "⚙ " + event.name));
              status.textContent = agent + " is running " + event.name + "…";
              break;
            case "tool_result":
              if (tools && tools.lastChild) {
                tools.lastChild.className = "pill " + (event.is_error ? "bad" : "good");
              }
              break;
            case "status": {
              const note = el("div", "msg note");
              note.appendChild(el("div", "bubble", event.message));
              messages.insertBefore(note, reply.wrap);
              status.textContent = event.message;
              break;
            }
            case "message": {
              const sent = el("div", "msg agent");
              sent.appendChild(el("div", "bubble", event.text));
              messages.insertBefore(sent, reply.wrap);
              break;
            }
            case "reply":
              gotReply = true;
              reply.body.textContent = shown(event.text);
              reply.wrap.classList.remove("streaming");
              if (event.is_error) {
                reply.wrap.classList.add("error");
                fillError(reply.body, event.text);
              }
              reply.wrap.appendChild(el("div", "meta", agent + " · just now"));
              status.textContent = "";
              if (messageId !== null) acknowledge(messageId);
              break;
          }
          scrollDown();
        }
      }
      if (!gotReply) {
        reply.wrap.classList.remove("streaming");
        status.textContent = "";
        showChatError("The connection ended before the reply; the message stays queued and the reply will show here after a reload.");
      }
    } catch (error) {
      if (reply) reply.wrap.classList.remove("streaming");
      status.textContent = "";
      showChatError("Could not reach palisade: " + error.message);
    } finally {
      button.disabled = false;
      input.focus();
    }
  }

  if (composer && messages) {
    scrollDown();
    messages.querySelectorAll(".msg[data-ack]").forEach(function (shown) {
      acknowledge(shown.dataset.ack);
      shown.removeAttribute("data-ack");
    });
    const input = document.getElementById("message");
    composer.addEventListener("submit", function (event) {
      event.preventDefault();
      const text = input.value;
      if (!text.trim()) {
        showChatError("The message is empty; write something for the agent to answer.");
        return;
      }
      send(text);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
  }

  // ---------- Buttons that decide ----------
  // A button that decides something (Approve, Deny, a confirmation page's button, one
  // that turns a rule or the dial's approvals off) comes disabled and works only once
  // it has been on screen for ARM_MS. Another page on the same site could open this one
  // under the pointer between the two clicks of a double-click it asked for; the second
  // click must land on nothing. A page opened in the background is armed from when it
  // is first seen, not from when it loaded.
  const ARM_MS = 1000;

  function arm(root) {
    if (document.hidden) {
      document.addEventListener("visibilitychange", function seen() {
        if (document.hidden) return;
        document.removeEventListener("visibilitychange", seen);
        arm(root);
      });
      return;
    }
    root.querySelectorAll("button[data-arm]").forEach(function (button) {
      if (button.dataset.armed) return;
      button.dataset.armed = "soon";
      setTimeout(function () {
        button.dataset.armed = "yes";
        if (!button.closest("article.closed")) button.disabled = false;
      }, ARM_MS);
    });
  }
  arm(document);

  // ---------- Approvals ----------
  const live = document.getElementById("approvals-live");
  const badge = document.getElementById("approvals-badge");
  const flash = document.getElementById("approval-flash");
  const POLL_MS = 2000;

  function showFlash(text, bad) {
    if (!flash) return;
    flash.textContent = text;
    flash.className = bad ? "flash error-box" : "flash";
    flash.hidden = !text;
  }

  function setBadge(count) {
    if (!badge) return;
    badge.textContent = String(count);
    badge.hidden = count === 0;
  }

  // Whether the flash shows why the list could not be refreshed (cleared once it can).
  let pollTrouble = false;

  function showPollTrouble(text) {
    pollTrouble = true;
    showFlash(text, true);
  }

  async function refreshApprovals() {
    let response;
    try {
      response = await fetch(live.dataset.poll, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
    } catch (_) {
      showPollTrouble("The host is not answering, so this list may be out of date; still trying.");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      // A restarted host forgets its sessions: without this, the page went on saying
      // nothing waits while requests waited.
      showPollTrouble("You are logged out (the host may have restarted), so this list is no longer updated: run `palisade login` on the host for a new login link.");
      return;
    }
    if (!response.ok) {
      showPollTrouble("This list could not be refreshed: the host answered " + response.status + ". Still trying.");
      return;
    }
    if (pollTrouble) {
      pollTrouble = false;
      showFlash("", false);
    }
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("pending");
    const current = document.getElementById("pending");
    if (!fresh || !current) return;
    setBadge(Number(fresh.dataset.count || 0));
    const freshDecided = doc.getElementById("decided");
    const decided = document.getElementById("decided");
    if (freshDecided && decided && freshDecided.innerHTML !== decided.innerHTML) {
      decided.replaceWith(document.importNode(freshDecided, true));
    }
    if (fresh.dataset.ids === current.dataset.ids) return;
    const freshCards = fresh.querySelectorAll("article[data-id]");
    // Cards never move under the pointer: a click aimed at one card must not land on
    // the next because the one above it was decided or timed out. A card no longer
    // waiting stays where it is, greyed and without buttons; new ones are added at the
    // end (the list is oldest first), never where a closed one's buttons were.
    const shown = new Set();
    current.querySelectorAll("article[data-id]").forEach(function (card) {
      shown.add(card.dataset.id);
      const still = fresh.querySelector('article[data-id="' + CSS.escape(card.dataset.id) + '"]');
      if (!still) closeCard(card, "No longer waiting: decided elsewhere, timed out or withdrawn (see the decisions below).");
    });
    const empty = current.querySelector(".empty-state");
    if (empty) empty.remove();
    freshCards.forEach(function (card) {
      if (shown.has(card.dataset.id)) return;
      const added = document.importNode(card, true);
      current.appendChild(added);
      arm(added);
    });
    const freshEmpty = fresh.querySelector(".empty-state");
    if (freshEmpty) current.appendChild(document.importNode(freshEmpty, true));
    current.dataset.ids = fresh.dataset.ids;
    current.dataset.count = fresh.dataset.count;
  }

  // Greys `card` where it is, its controls disabled for good, with `why` under it.
  function closeCard(card, why) {
    if (card.classList.contains("closed")) return;
    card.classList.add("closed");
    card.querySelectorAll("button, textarea").forEach(function (control) { control.disabled = true; });
    const note = document.createElement("p");
    note.className = "muted small closed-note";
    note.textContent = why;
    card.appendChild(note);
  }

  if (live) {
    let polling = false;
    const poll = function () {
      if (document.hidden || polling) return;
      polling = true;
      refreshApprovals().catch(function () {}).finally(function () { polling = false; });
    };
    setInterval(poll, POLL_MS);
    document.addEventListener("visibilitychange", poll);

    live.addEventListener("submit", async function (event) {
      const form = event.target;
      if (!form.classList.contains("decide")) return;
      event.preventDefault();
      const data = new URLSearchParams(new FormData(form));
      const submitter = event.submitter;
      if (submitter && submitter.name) data.set(submitter.name, submitter.value);
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      try {
        const response = await fetch(form.action, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRF-Token": csrf,
            Accept: "application/json",
          },
          body: data.toString(),
        });
        let body = {};
        try { body = await response.json(); } catch (_) { /* not JSON */ }
        showFlash(body.message || ("the host answered " + response.status), !response.ok);
        // The card the person just decided closes where it is: removed, the card below
        // would move up under the pointer, and the second click of a double-click
        // would decide it.
        const card = form.closest("article[data-id]");
        if (response.ok && card) closeCard(card, "Decided here: " + (body.message || body.status || "done") + ".");
      } catch (error) {
        showFlash("Could not reach palisade: " + error.message, true);
      }
      await refreshApprovals().catch(function () {});
      // A card closed meanwhile (decided elsewhere) keeps its buttons disabled.
      if (!form.closest("article.closed")) {
        form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      }
    });
  }
})();
