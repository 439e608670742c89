// The sandbox's web chat: a Telegram-like client over the sandbox's user-side API.
// Plain browser JavaScript, no build step. It talks only to /sandbox/... (never
// to the Bot API side) and follows the bot live through Server-Sent Events.
"use strict";

const TEXTS = {
  en: {
    skip: "Skip to the message box", you: "You", userId: "User id", name: "Name",
    language: "Language", switch: "Switch", chats: "Chats", newGroup: "New group",
    groupTitle: "Group name", create: "Create", manage: "Manage", addMember: "Add member",
    add: "Add", makeAdmin: "Make admin", member: "Member", promote: "Promote",
    cancel: "Cancel", message: "Message", attach: "File",
    location: "Location", send: "Send", latitude: "Latitude",
    longitude: "Longitude", share: "Share", ok: "OK", privateChat: "private chat",
    members: "Members", admin: "admin", block: "Block the bot", unblock: "Unblock the bot",
    blocked: "You blocked the bot", typing: "is typing…", upload_photo: "is sending a photo…",
    upload_document: "is sending a file…", find_location: "is looking for a location…",
    reply: "Reply", edit: "Edit", edited: "edited", replyingTo: "Replying to",
    editing: "Editing your message", joined: "joined the group", photo: "Photo",
    sticker: "Sticker", noCommands: "This bot has no commands here",
    placeholder: "Write a message…", bot: "bot", noChat: "Pick a chat",
    error: "Error", connected: "online", reconnecting: "reconnecting…",
  },
  es: {
    skip: "Ir al cuadro de mensaje", you: "Tú", userId: "Id de usuario", name: "Nombre",
    language: "Idioma", switch: "Cambiar", chats: "Chats", newGroup: "Nuevo grupo",
    groupTitle: "Nombre del grupo", create: "Crear", manage: "Gestionar",
    addMember: "Añadir miembro", add: "Añadir", makeAdmin: "Hacer admin",
    member: "Miembro", promote: "Ascender", cancel: "Cancelar", message: "Mensaje",
    attach: "Archivo", location: "Ubicación",
    send: "Enviar", latitude: "Latitud", longitude: "Longitud", share: "Compartir",
    ok: "Aceptar", privateChat: "chat privado", members: "Miembros", admin: "admin",
    block: "Bloquear al bot", unblock: "Desbloquear al bot", blocked: "Bloqueaste al bot",
    typing: "está escribiendo…", upload_photo: "está enviando una foto…",
    upload_document: "está enviando un archivo…", find_location: "busca una ubicación…",
    reply: "Responder", edit: "Editar", edited: "editado", replyingTo: "Respondiendo a",
    editing: "Editando tu mensaje", joined: "se unió al grupo", photo: "Foto",
    sticker: "Sticker", noCommands: "Este bot no tiene comandos aquí",
    placeholder: "Escribe un mensaje…", bot: "bot", noChat: "Elige un chat",
    error: "Error", connected: "en línea", reconnecting: "reconectando…",
  },
};
const TYPING_FOR = 5000; // ms a chat action shows, as in Telegram's clients
const TOAST_FOR = 4000; // ms a callback answer stays on screen
const SAFE_LINK = /^(https?:|mailto:|tg:)/i;

const params = new URLSearchParams(location.search);
const state = {
  bot: null, // {id, username, first_name}
  me: loadIdentity(),
  chats: new Map(), // chat id -> chat json (with members, admins, member_names, blocked)
  messages: new Map(), // chat id -> Map(message id -> {message, fromUser})
  current: null, // chat id shown
  commands: [],
  replyTo: null,
  editing: null,
  typingTimer: null,
  source: null,
};

function loadIdentity() {
  const saved = JSON.parse(sessionStorage.getItem("botbus-me") || "null");
  const id = Number(params.get("user")) || saved?.id || 1001;
  return {
    id,
    first_name: params.get("name") || saved?.first_name || `User ${id}`,
    language_code: params.get("lang") || saved?.language_code || "en",
  };
}

function t(key) {
  const texts = TEXTS[state.me.language_code] || TEXTS.en;
  return texts[key] ?? TEXTS.en[key] ?? key;
}

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// -- talking to the sandbox -------------------------------------------------
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/sandbox${path}`, options);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = (data && data.error) || `HTTP ${response.status}`;
    toast(`${t("error")}: ${message}`, true);
    throw new Error(message);
  }
  return data;
}

const botPath = (rest) => `/bots/${state.bot.id}${rest}`;
const who = () => ({ user: state.me, lang: state.me.language_code });

// -- formatting: Telegram entities to DOM -----------------------------------
function renderEntities(text, entities) {
  const sorted = [...(entities || [])].sort(
    (a, b) => a.offset - b.offset || b.length - a.length,
  );
  return renderRange(text, 0, text.length, sorted);
}

function renderRange(text, start, end, entities) {
  const out = [];
  let at = start;
  let i = 0;
  while (i < entities.length) {
    const entity = entities[i];
    const entityEnd = entity.offset + entity.length;
    if (entity.offset < at || entityEnd > end) { i++; continue; }
    if (entity.offset > at) out.push(text.slice(at, entity.offset));
    const inner = [];
    let j = i + 1;
    while (j < entities.length && entities[j].offset < entityEnd) {
      inner.push(entities[j]);
      j++;
    }
    out.push(entityNode(entity, text, renderRange(text, entity.offset, entityEnd, inner)));
    at = entityEnd;
    i = j;
  }
  if (at < end) out.push(text.slice(at, end));
  return out;
}

function entityNode(entity, text, children) {
  const raw = text.slice(entity.offset, entity.offset + entity.length);
  switch (entity.type) {
    case "bold": return el("strong", {}, children);
    case "italic": return el("em", {}, children);
    case "underline": return el("u", {}, children);
    case "strikethrough": return el("s", {}, children);
    case "spoiler": {
      const node = el("span", { class: "spoiler", tabindex: "0", role: "button",
        "aria-label": "spoiler" }, children);
      const reveal = () => node.classList.add("revealed");
      node.addEventListener("click", reveal);
      node.addEventListener("keydown", (e) => { if (e.key === "Enter") reveal(); });
      return node;
    }
    case "code": return el("code", {}, children);
    case "pre": return el("pre", {}, el("code", {}, children));
    case "blockquote":
    case "expandable_blockquote": return el("blockquote", {}, children);
    case "text_link": return link(entity.url, children);
    case "url": return link(/^[a-z]+:/i.test(raw) ? raw : `http://${raw}`, children);
    case "email": return link(`mailto:${raw}`, children);
    case "bot_command":
      return el("a", { href: "#", class: "command",
        onclick: (e) => { e.preventDefault(); sendText(raw.split("@")[0]); } }, children);
    default: return el("span", { class: entity.type }, children);
  }
}

function link(url, children) {
  if (!SAFE_LINK.test(url || "")) return el("span", {}, children);
  return el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, children);
}

// -- messages ---------------------------------------------------------------
function chatMessages(chatId) {
  if (!state.messages.has(chatId)) state.messages.set(chatId, new Map());
  return state.messages.get(chatId);
}

function senderName(message) {
  const from = message.from || {};
  if (message.sender_chat) return message.sender_chat.title || "";
  return [from.first_name, from.last_name].filter(Boolean).join(" ") || from.username || "";
}

function fileUrl(fileId) {
  return `/sandbox${botPath(`/files/${encodeURIComponent(fileId)}`)}`;
}

function messageBody(message) {
  const parts = [];
  if (message.new_chat_members) {
    const names = message.new_chat_members.map((u) => u.first_name).join(", ");
    return [el("p", { class: "service" }, `${names} ${t("joined")}`)];
  }
  if (message.photo) {
    const size = message.photo[message.photo.length - 1];
    parts.push(el("img", { class: "photo", src: fileUrl(size.file_id), alt: message.caption || t("photo"),
      width: size.width, height: size.height, loading: "lazy" }));
  }
  if (message.sticker) {
    parts.push(el("img", { class: "sticker", src: fileUrl(message.sticker.file_id),
      alt: `${t("sticker")} ${message.sticker.emoji || ""}` }));
  }
  if (message.document) {
    const doc = message.document;
    parts.push(el("a", { class: "document", href: fileUrl(doc.file_id), download: doc.file_name || "file" },
      `${t("attach")}: ${doc.file_name || "file"} (${Math.ceil((doc.file_size || 0) / 1024)} KB)`));
  }
  if (message.location) {
    const { latitude, longitude } = message.location;
    parts.push(el("p", { class: "location" }, `${t("location")}: ${latitude.toFixed(5)}, ${longitude.toFixed(5)}`));
  }
  const text = message.text ?? message.caption;
  if (text) {
    const entities = message.text !== undefined ? message.entities : message.caption_entities;
    parts.push(el("p", { class: "text" }, renderEntities(text, entities)));
  }
  return parts;
}

function keyboard(message) {
  const rows = (message.reply_markup && message.reply_markup.inline_keyboard) || [];
  if (!rows.length) return null;
  return el("div", { class: "keyboard", role: "group", "aria-label": "buttons" },
    rows.map((row) => el("div", { class: "row" }, row.map((button) => {
      if (button.url) {
        return link(button.url, [button.text]);
      }
      return el("button", { type: "button", class: "inline",
        onclick: () => press(message, button) }, button.text);
    }))));
}

function renderMessage(entry) {
  const { message, fromUser } = entry;
  const mine = fromUser && message.from && message.from.id === state.me.id;
  const chat = state.chats.get(message.chat.id);
  const group = chat && chat.type !== "private";
  const item = el("li", {
    id: `m-${message.message_id}`,
    class: `message ${fromUser ? "user" : "bot"} ${mine ? "mine" : ""}`,
    "data-message-id": message.message_id,
  });
  if (group && !mine && !message.new_chat_members) {
    item.append(el("p", { class: "sender" }, senderName(message)));
  }
  if (message.reply_to_message) {
    const quoted = message.reply_to_message;
    item.append(el("a", { class: "quote", href: `#m-${quoted.message_id}` },
      el("strong", {}, senderName(quoted)), " ",
      (quoted.text || quoted.caption || (quoted.photo ? t("photo") : "")).slice(0, 80)));
  }
  item.append(...messageBody(message));
  const markup = keyboard(message);
  if (markup) item.append(markup);
  const meta = el("p", { class: "meta" },
    el("time", { datetime: new Date(message.date * 1000).toISOString() },
      new Date(message.date * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
    message.edit_date ? ` · ${t("edited")}` : "");
  if (!message.new_chat_members) {
    meta.append(" ", el("button", { type: "button", class: "small",
      onclick: () => startReply(message) }, t("reply")));
    if (mine && (message.text !== undefined || message.caption !== undefined)) {
      meta.append(" ", el("button", { type: "button", class: "small",
        onclick: () => startEdit(message) }, t("edit")));
    }
  }
  item.append(meta);
  return item;
}

function showMessage(chatId, messageId) {
  if (chatId !== state.current) return;
  const entry = chatMessages(chatId).get(messageId);
  const list = $("messages");
  const old = document.getElementById(`m-${messageId}`);
  if (!entry) { if (old) old.remove(); return; }
  const node = renderMessage(entry);
  if (old) old.replaceWith(node);
  else {
    list.append(node);
    node.scrollIntoView({ block: "end" });
  }
}

function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  if (state.current === null) return;
  for (const entry of chatMessages(state.current).values()) list.append(renderMessage(entry));
  if (list.lastElementChild) list.lastElementChild.scrollIntoView({ block: "end" });
}

// -- live events ------------------------------------------------------------
function onEvent(event) {
  const chatId = event.chat_id;
  switch (event.kind) {
    case "message":
    case "edit":
    case "user_message":
    case "user_edit": {
      const message = event.message;
      const fromUser = event.kind.startsWith("user_");
      chatMessages(chatId).set(message.message_id, { message, fromUser });
      if (!state.chats.has(chatId)) refreshChats();
      if (event.kind === "message") clearTyping(chatId);
      showMessage(chatId, message.message_id);
      markUnread(chatId);
      break;
    }
    case "delete":
      chatMessages(chatId).delete(event.message_id);
      showMessage(chatId, event.message_id);
      break;
    case "callback_answer":
      if (event.user_id === state.me.id && event.text) {
        if (event.show_alert) showAlert(event.text);
        else toast(event.text);
      }
      break;
    case "chat_action":
      showTyping(chatId, event.action);
      break;
    case "chat":
      state.chats.set(chatId, event.chat);
      renderChatList();
      if (chatId === state.current) renderChatHead();
      break;
    default:
      break;
  }
}

function connect() {
  if (state.source) state.source.close();
  const url = `/sandbox${botPath(`/stream?user_id=${state.me.id}`)}`;
  const source = new EventSource(url);
  source.onmessage = (e) => onEvent(JSON.parse(e.data));
  source.onopen = () => document.body.setAttribute("data-connected", "true");
  source.onerror = () => document.body.setAttribute("data-connected", "false");
  state.source = source;
}

function showTyping(chatId, action) {
  if (chatId !== state.current) return;
  const name = state.bot.first_name || state.bot.username;
  $("chat-status").textContent = `${name} ${t(action) === action ? t("typing") : t(action)}`;
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(() => clearTyping(chatId), TYPING_FOR);
}

function clearTyping(chatId) {
  if (chatId !== state.current) return;
  clearTimeout(state.typingTimer);
  renderChatStatus();
}

function markUnread(chatId) {
  if (chatId === state.current) return;
  const button = document.querySelector(`[data-chat-id="${chatId}"]`);
  if (button) button.classList.add("unread");
}

// -- chats ------------------------------------------------------------------
async function refreshChats() {
  const chats = await api("GET", botPath(`/chats?user_id=${state.me.id}`));
  state.chats.clear();
  for (const chat of chats) state.chats.set(chat.id, chat);
  renderChatList();
  if (state.current !== null) renderChatHead();
}

function chatTitle(chat) {
  if (!chat) return "";
  if (chat.type === "private") return state.bot.first_name || state.bot.username;
  return chat.title;
}

function renderChatList() {
  const list = $("chat-list");
  list.replaceChildren();
  const ids = [state.me.id, ...[...state.chats.keys()].filter((id) => id < 0)];
  for (const id of ids) {
    const chat = state.chats.get(id) || { id, type: "private" };
    const label = chat.type === "private" ? `${chatTitle(chat)} (${t("privateChat")})` : chat.title;
    list.append(el("li", {}, el("button", {
      type: "button", class: "chat-button", "data-chat-id": id,
      "aria-current": id === state.current ? "page" : false,
      onclick: () => openChat(id),
    }, label)));
  }
}

async function openChat(chatId) {
  state.current = chatId;
  state.replyTo = state.editing = null;
  renderContextBar();
  renderChatList();
  renderChatHead();
  renderMessages();
  document.body.classList.remove("show-sidebar");
  $("show-chats").setAttribute("aria-expanded", "false");
  await loadCommands();
  $("composer-text").focus();
}

function renderChatHead() {
  const chat = state.chats.get(state.current) || { id: state.current, type: "private" };
  $("chat-title").textContent = chatTitle(chat);
  renderChatStatus();
  const isPrivate = chat.type === "private";
  $("private-tools").hidden = !isPrivate;
  $("group-tools").hidden = isPrivate;
  $("block").textContent = chat.blocked ? t("unblock") : t("block");
  if (!isPrivate) {
    const names = chat.member_names || {};
    const members = (chat.members || []).map((id) => {
      const admin = (chat.admins || []).includes(id) ? ` (${t("admin")})` : "";
      return `${names[id] || id}${admin}`;
    });
    $("members").textContent = `${t("members")}: ${members.join(", ")}`;
    $("admin-user").replaceChildren(...(chat.members || [])
      .filter((id) => !(chat.admins || []).includes(id))
      .map((id) => el("option", { value: id }, `${names[id] || id} (${id})`)));
  }
}

function renderChatStatus() {
  const chat = state.chats.get(state.current);
  let status = `@${state.bot.username} · ${t("bot")}`;
  if (chat && chat.type !== "private") status = `${(chat.members || []).length + 1} ${t("members").toLowerCase()}`;
  if (chat && chat.blocked) status = t("blocked");
  $("chat-status").textContent = status;
}

// -- commands: the "/" picker -----------------------------------------------
async function loadCommands() {
  const query = new URLSearchParams({ user_id: state.me.id, chat_id: state.current,
    lang: state.me.language_code });
  const menu = await api("GET", botPath(`/commands?${query}`));
  state.commands = menu.commands || [];
}

function showCommands(filter) {
  const list = $("command-list");
  const input = $("composer-text");
  const matches = state.commands.filter((c) => `/${c.command}`.startsWith(filter));
  list.replaceChildren(...matches.map((c, i) => el("li", {
    id: `cmd-${c.command}`, role: "option", "aria-selected": i === 0 ? "true" : "false",
    "data-command": c.command,
    onmousedown: (e) => { e.preventDefault(); pickCommand(c.command); },
  }, el("strong", {}, `/${c.command}`), " ", el("span", {}, c.description))));
  if (!matches.length) list.append(el("li", { class: "empty", role: "option", "aria-disabled": "true" }, t("noCommands")));
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  $("menu-button").setAttribute("aria-expanded", "true");
  const first = list.querySelector('[aria-selected="true"]');
  input.setAttribute("aria-activedescendant", first ? first.id : "");
}

function hideCommands() {
  $("command-list").hidden = true;
  $("composer-text").setAttribute("aria-expanded", "false");
  $("composer-text").removeAttribute("aria-activedescendant");
  $("menu-button").setAttribute("aria-expanded", "false");
}

function moveSelection(step) {
  const options = [...$("command-list").querySelectorAll("[data-command]")];
  if (!options.length) return;
  let index = options.findIndex((o) => o.getAttribute("aria-selected") === "true");
  index = (index + step + options.length) % options.length;
  options.forEach((o, i) => o.setAttribute("aria-selected", i === index ? "true" : "false"));
  $("composer-text").setAttribute("aria-activedescendant", options[index].id);
  options[index].scrollIntoView({ block: "nearest" });
}

function pickCommand(command) {
  hideCommands();
  $("composer-text").value = "";
  sendText(`/${command}`);
}

// -- what the user does -----------------------------------------------------
async function sendText(text) {
  if (state.current === null || !text.trim()) return;
  if (state.editing) {
    const editing = state.editing;
    state.editing = null;
    renderContextBar();
    await api("PATCH", botPath(`/chats/${state.current}/messages/${editing.message_id}`),
      { text, caption: text, ...who() });
    return;
  }
  await sendContent({ text });
}

async function sendContent(content) {
  const body = { ...content, ...who(), chat_id: state.current };
  if (state.replyTo) body.reply_to = state.replyTo.message_id;
  state.replyTo = null;
  renderContextBar();
  await api("POST", botPath("/messages"), body);
}

async function press(message, button) {
  await api("POST", botPath("/callbacks"), {
    chat_id: message.chat.id, message_id: message.message_id, data: button.callback_data,
    ...who(),
  });
}

function startReply(message) {
  state.editing = null;
  state.replyTo = message;
  renderContextBar();
  $("composer-text").focus();
}

function startEdit(message) {
  state.replyTo = null;
  state.editing = message;
  $("composer-text").value = message.text ?? message.caption ?? "";
  renderContextBar();
  $("composer-text").focus();
}

function renderContextBar() {
  const bar = $("context-bar");
  if (state.editing) {
    $("context-text").textContent = t("editing");
  } else if (state.replyTo) {
    const quoted = state.replyTo.text || state.replyTo.caption || "";
    $("context-text").textContent = `${t("replyingTo")} ${senderName(state.replyTo)}: ${quoted.slice(0, 60)}`;
  }
  bar.hidden = !(state.editing || state.replyTo);
}

async function attach(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const uploaded = await api("POST", botPath("/files"), form);
  const caption = $("composer-text").value.trim();
  const content = uploaded.width ? { photo: uploaded.file_id } : { document: uploaded.file_id };
  if (caption) content.caption = caption;
  $("composer-text").value = "";
  await sendContent(content);
}

function toast(text, isError = false) {
  const node = el("p", { class: `toast ${isError ? "error" : ""}` }, text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), TOAST_FOR);
}

function showAlert(text) {
  $("alert-text").textContent = text;
  $("alert").showModal();
}

function applyTexts() {
  document.documentElement.lang = state.me.language_code;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("composer-text").placeholder = t("placeholder");
  $("me-label").textContent = `${state.me.first_name} (${state.me.id}, ${state.me.language_code})`;
  $("me-id").value = state.me.id;
  $("me-name").value = state.me.first_name;
  $("me-lang").value = state.me.language_code;
}

async function becomeMe() {
  sessionStorage.setItem("botbus-me", JSON.stringify(state.me));
  state.messages.clear();
  applyTexts();
  await refreshChats();
  connect();
  await openChat(state.me.id);
}

// -- wiring -----------------------------------------------------------------
function wire() {
  const input = $("composer-text");
  $("send-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const options = $("command-list");
    if (!options.hidden) {
      const chosen = options.querySelector('[aria-selected="true"][data-command]');
      if (chosen) { pickCommand(chosen.dataset.command); return; }
    }
    const text = input.value;
    input.value = "";
    hideCommands();
    await sendText(text);
  });
  input.addEventListener("input", () => {
    const value = input.value;
    if (value.startsWith("/") && !value.includes(" ") && !state.editing) showCommands(value);
    else hideCommands();
  });
  input.addEventListener("keydown", (e) => {
    const open = !$("command-list").hidden;
    if (open && e.key === "ArrowDown") { e.preventDefault(); moveSelection(1); }
    else if (open && e.key === "ArrowUp") { e.preventDefault(); moveSelection(-1); }
    else if (open && e.key === "Tab") {
      const chosen = $("command-list").querySelector('[aria-selected="true"][data-command]');
      if (chosen) { e.preventDefault(); input.value = `/${chosen.dataset.command} `; hideCommands(); }
    } else if (e.key === "Escape") {
      if (open) hideCommands();
      else if (state.editing || state.replyTo) {
        state.editing = state.replyTo = null;
        input.value = "";
        renderContextBar();
      }
    }
  });
  $("menu-button").addEventListener("click", async () => {
    if (!$("command-list").hidden) { hideCommands(); return; }
    await loadCommands();
    showCommands("/");
    input.focus();
  });
  $("context-cancel").addEventListener("click", () => {
    state.editing = state.replyTo = null;
    input.value = "";
    renderContextBar();
    input.focus();
  });
  $("attach").addEventListener("change", async (e) => {
    const [file] = e.target.files;
    e.target.value = "";
    if (file) await attach(file);
  });
  $("location-button").addEventListener("click", () => {
    const form = $("location-form");
    form.hidden = !form.hidden;
    $("location-button").setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) $("latitude").focus();
  });
  $("location-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("location-form").hidden = true;
    $("location-button").setAttribute("aria-expanded", "false");
    await sendContent({ location: {
      latitude: Number($("latitude").value), longitude: Number($("longitude").value) } });
    input.focus();
  });
  $("identity-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.me = { id: Number($("me-id").value), first_name: $("me-name").value.trim(),
      language_code: $("me-lang").value };
    $("identity").open = false;
    await becomeMe();
  });
  $("group-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const chatId = -(1000000000000 + Math.floor(Math.random() * 1000000000));
    const chat = await api("POST", botPath("/groups"), {
      chat_id: chatId, title: $("group-title").value.trim(), admins: [state.me] });
    $("group-title").value = "";
    $("new-group").open = false;
    state.chats.set(chat.id, chat);
    await openChat(chat.id);
  });
  $("member-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = Number($("member-id").value);
    const name = $("member-name").value.trim() || `User ${id}`;
    await api("POST", botPath(`/chats/${state.current}/members`), {
      user: { id, first_name: name }, lang: state.me.language_code });
    $("member-id").value = $("member-name").value = "";
  });
  $("admin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await api("POST", botPath(`/chats/${state.current}/admins`), {
      user_id: Number($("admin-user").value) });
  });
  $("block").addEventListener("click", async () => {
    const chat = state.chats.get(state.me.id);
    if (chat && chat.blocked) await api("DELETE", botPath(`/blocks/${state.me.id}`));
    else await api("POST", botPath("/blocks"), { user_id: state.me.id });
  });
  $("show-chats").addEventListener("click", () => {
    const shown = document.body.classList.toggle("show-sidebar");
    $("show-chats").setAttribute("aria-expanded", String(shown));
    if (shown) document.querySelector(".chat-button")?.focus();
  });
  document.addEventListener("keydown", (e) => {
    // Escape closes the chat list drawer on a phone, back to the chat
    if (e.key === "Escape" && document.body.classList.contains("show-sidebar")) {
      document.body.classList.remove("show-sidebar");
      $("show-chats").setAttribute("aria-expanded", "false");
      $("show-chats").focus();
    }
  });
}

async function main() {
  wire();
  const bots = await api("GET", "/bots");
  const wanted = Number(params.get("bot"));
  state.bot = bots.find((b) => b.id === wanted) || bots[0];
  if (!state.bot) { $("chat-title").textContent = "No bot in this sandbox"; return; }
  $("bot-title").textContent = `@${state.bot.username}`;
  document.title = `@${state.bot.username} · botbus sandbox`;
  await becomeMe();
  document.body.setAttribute("data-ready", "true");
}

main();
