// The app's screens: login / sign-up, then the chat list and the open chat.
// State comes from the Rust side (commands) and stays current through its
// events; nothing here talks to the server.
import "./style.css";
import {
  backend, errorText, onEvent, onOpenChat, pictureUrl,
  type ChatSummary, type ConnectionState, type Limits, type MessageView, type User,
} from "./backend";
import { h } from "./dom";
import { initials, typingText } from "./text";

const root = document.getElementById("app")!;

const state = {
  me: null as User | null,
  serverUrl: "",
  limits: null as Limits | null,
  connection: "offline" as ConnectionState,
  chats: [] as ChatSummary[],
  active: null as string | null,
  messages: [] as MessageView[],
  typing: new Map<string, string[]>(),
  filter: "",
};

function avatar(name: string, pic: string | null): HTMLElement {
  if (pic) return h("img", { class: "avatar", src: pictureUrl(pic), alt: "" });
  return h("div", { class: "avatar initials", "aria-hidden": "true" }, initials(name));
}

function time(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- login and sign-up ----

function renderLogin(error = "") {
  let signUp = false;
  const server = h("input", { id: "server", value: state.serverUrl, "aria-label": "Server address" });
  const name = h("input", { id: "name", placeholder: "Your name", "aria-label": "Name" });
  const email = h("input", { id: "email", type: "email", placeholder: "Email", "aria-label": "Email" });
  const password = h("input", { id: "password", type: "password", placeholder: "Password", "aria-label": "Password" });
  const pic = h("input", { id: "pic", placeholder: "Picture file (optional path)", "aria-label": "Picture" });
  const message = h("p", { class: "error", role: "alert" }, error);
  const submit = h("button", { type: "submit", id: "submit" }, "Log in");
  const toggle = h("button", { type: "button", class: "link", id: "toggle" }, "Create an account");
  const signUpFields = h("div", { hidden: true }, name, pic);
  toggle.addEventListener("click", () => {
    signUp = !signUp;
    signUpFields.hidden = !signUp;
    submit.textContent = signUp ? "Sign up" : "Log in";
    toggle.textContent = signUp ? "I have an account" : "Create an account";
  });
  const form = h("form", { class: "login" },
    h("h1", {}, "Natter"), server, signUpFields, email, password, message, submit, toggle);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    message.textContent = "";
    try {
      state.serverUrl = await backend.setServerUrl(server.value);
      state.me = signUp
        ? await backend.signUp(name.value, email.value, password.value, pic.value.trim() || null)
        : await backend.login(email.value, password.value);
      await showMain();
    } catch (err) {
      message.textContent = errorText(err);
    }
  });
  root.replaceChildren(form);
}

// ---- the main screen ----

async function showMain() {
  const list = await backend.chats();
  state.chats = list.chats;
  renderMain();
}

function renderMain() {
  const banner = state.connection === "online" ? null
    : h("div", { class: "banner", role: "status" }, state.connection === "connecting" ? "Connecting…" : "Offline: showing what is saved on this computer");
  const filter = h("input", { class: "filter", placeholder: "Search chats", value: state.filter, "aria-label": "Filter chats" });
  filter.addEventListener("input", () => { state.filter = filter.value; renderList(listEl); });
  const listEl = h("ul", { class: "chats", role: "list" });
  renderList(listEl);
  const side = h("aside", {},
    h("header", {}, avatar(state.me?.name ?? "", state.me?.pic ?? null), h("span", { class: "me" }, state.me?.name ?? ""),
      h("button", { class: "link", onClick: logout }, "Log out")),
    filter, listEl);
  root.replaceChildren(h("div", { class: "main" }, side, renderChat()), ...(banner ? [banner] : []));
}

function renderList(listEl: HTMLElement) {
  const needle = state.filter.toLowerCase();
  listEl.replaceChildren(...state.chats
    .filter((c) => c.name.toLowerCase().includes(needle))
    .map((chat) => h("li", {},
      h("button", { class: chat.id === state.active ? "chat active" : "chat", onClick: () => openChat(chat.id) },
        avatar(chat.name, chat.pic),
        h("span", { class: "name" }, chat.name),
        h("span", { class: "preview" }, chat.lastMessage?.content ?? ""),
        chat.lastMessage ? h("time", {}, time(chat.lastMessage.createdAt)) : null,
        chat.unread > 0 ? h("span", { class: "badge", "aria-label": `${chat.unread} unread` }, String(chat.unread)) : null))));
}

function renderChat(): HTMLElement {
  const chat = state.chats.find((c) => c.id === state.active);
  if (!chat) return h("section", { class: "empty" }, "Pick a chat");
  const messages = h("ol", { class: "messages" }, ...state.messages.map((m) =>
    h("li", { class: `msg ${m.mine ? "mine" : "theirs"} ${m.status}` },
      chat.isGroup && !m.mine ? h("b", {}, m.sender.name) : null,
      h("p", {}, m.content),
      h("small", {}, m.status === "pending" ? "pending" : m.status === "failed" ? `not sent: ${m.error}` : time(m.createdAt)))));
  const composer = h("textarea", { rows: 1, placeholder: "Write a message", "aria-label": "Message", maxlength: state.limits?.contentMaxChars });
  composer.addEventListener("input", () => void backend.typing(chat.id, composer.value.length > 0));
  composer.addEventListener("keydown", async (e) => {
    if (e.key !== "Enter" || e.shiftKey) return;
    e.preventDefault();
    const text = composer.value;
    if (!text.trim()) return;
    try {
      await backend.send(chat.id, text);
      composer.value = "";
    } catch (err) {
      alert(errorText(err));
    }
  });
  const section = h("section", { class: "chat-view" },
    h("header", {}, avatar(chat.name, chat.pic), h("h2", {}, chat.name)),
    messages,
    h("div", { class: "typing", "aria-live": "polite" }, typingText(state.typing.get(chat.id) ?? [])),
    composer);
  queueMicrotask(() => { messages.scrollTop = messages.scrollHeight; composer.focus(); });
  return section;
}

async function openChat(chatId: string) {
  state.active = chatId;
  await backend.setActiveChat(chatId);
  state.messages = await backend.history(chatId, null);
  renderMain();
}

async function logout() {
  await backend.logout();
  state.me = null;
  state.active = null;
  renderLogin();
}

function upsertMessage(message: MessageView) {
  if (message.chatId !== state.active) return;
  const i = state.messages.findIndex((m) => m.id === message.id || (m.clientId !== null && m.clientId === message.clientId));
  if (i >= 0) state.messages[i] = message; else state.messages.push(message);
  state.messages.sort((a, b) => (a.seq ?? Number.MAX_SAFE_INTEGER) - (b.seq ?? Number.MAX_SAFE_INTEGER));
}

async function main() {
  const start = await backend.startup();
  state.serverUrl = start.serverUrl;
  state.limits = start.limits;
  state.me = start.me;
  state.connection = start.connection;
  await onEvent((event) => {
    switch (event.type) {
      case "connection": state.connection = event.state; break;
      case "chats": state.chats = event.chats; break;
      case "message": upsertMessage(event.message); break;
      case "typing": state.typing.set(event.chatId, event.names); break;
      case "sessionEnded": state.me = null; renderLogin(event.reason); return;
      default: return;
    }
    if (state.me) renderMain();
  });
  await onOpenChat((chatId) => void openChat(chatId));
  if (state.me) await showMain(); else renderLogin();
}

main().catch((err) => root.replaceChildren(h("p", { class: "error" }, errorText(err))));
