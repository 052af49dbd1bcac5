// The Rust side, typed: every command the shell offers and the events it
// sends. The UI talks to nothing else (docs/desktop.md).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

export interface User { id: string; name: string; email: string; pic: string | null }
export type Delivery = "sent" | "pending" | "failed";
export interface MessageView {
  id: string; clientId: string | null; chatId: string; seq: number | null;
  sender: User; content: string; createdAt: string; mine: boolean;
  status: Delivery; error: string | null;
}
export interface ChatSummary {
  id: string; name: string; isGroup: boolean; pic: string | null; members: User[];
  adminId: string | null; lastMessage: MessageView | null; updatedAt: string; unread: number;
  /** The user is no longer in it (left, or removed): readable, not writable. */
  left: boolean;
  /** The server failed to give some of its messages: they come when it is
   *  read again, after a wait (the engine keeps trying). */
  behind: boolean;
}
/** The chat list from one reading of the engine's cache. `version` orders
 *  readings: a list lower than one already shown is older (events and
 *  answers to commands may overtake each other). */
export interface ChatList { chats: ChatSummary[]; unreadTotal: number; version: number }
/** `crowded`: the server turned the app away, as this account has as many
 *  connections open as it allows (Natter open on other computers). */
export type ConnectionState = "offline" | "connecting" | "online" | "crowded";
export interface Limits { contentMaxChars: number; nameMaxChars: number; passwordMinChars: number; chatNameMaxChars: number }
/** `ended`: why the server ended the last session, when nobody has logged in since. */
export interface Startup { serverUrl: string; me: User | null; ended: string | null; connection: ConnectionState; limits: Limits }

export type EngineEvent =
  | { type: "connection"; state: ConnectionState }
  | ({ type: "chats" } & ChatList)
  | { type: "message"; message: MessageView }
  | { type: "typing"; chatId: string; names: string[] }
  | { type: "notify"; notification: { chatId: string; title: string; body: string } }
  | { type: "chatRead"; chatId: string }
  | { type: "sessionEnded"; reason: string }
  | { type: "signedOut" };

/** Errors from the Rust side come as `{ error }`; this gives their text. */
export function errorText(err: unknown): string {
  if (err && typeof err === "object" && "error" in err) return String((err as { error: unknown }).error);
  return String(err);
}

export const backend = {
  startup: () => invoke<Startup>("startup"),
  setServerUrl: (url: string) => invoke<string>("set_server_url", { url }),
  /** `pic`: the picture file's bytes (JSON carries them as numbers);
   *  `invitationCode`: for a server that asks for one. */
  signUp: (name: string, email: string, password: string, pic: Uint8Array | null, invitationCode: string | null) =>
    invoke<User>("sign_up", { name, email, password, pic: pic ? Array.from(pic) : null, invitationCode }),
  login: (email: string, password: string) => invoke<User>("login", { email, password }),
  logout: () => invoke<void>("logout"),
  /** How many messages have not reached the server yet (a logout deletes them). */
  unsent: () => invoke<number>("unsent"),
  chats: () => invoke<ChatList>("chats"),
  history: (chatId: string, before: number | null) => invoke<MessageView[]>("history", { chatId, before }),
  send: (chatId: string, content: string) => invoke<MessageView>("send", { chatId, content }),
  discard: (clientId: string) => invoke<void>("discard", { clientId }),
  /** Kept in the engine's cache ("" removes it), there after a restart. */
  setDraft: (chatId: string, text: string) => invoke<void>("set_draft", { chatId, text }),
  /** Every chat's saved draft, by chat id. */
  drafts: () => invoke<Record<string, string>>("drafts"),
  setActiveChat: (chatId: string | null) => invoke<void>("set_active_chat", { chatId }),
  typing: (chatId: string, isTyping: boolean) => invoke<void>("typing", { chatId, isTyping }),
  /** Who is typing now, by chat id (names), as the `typing` events tell it. */
  typists: () => invoke<Record<string, string[]>>("typists"),
  searchUsers: (query: string) => invoke<User[]>("search_users", { query }),
  openDirect: (userId: string) => invoke<ChatSummary>("open_direct", { userId }),
  createGroup: (name: string, members: string[]) => invoke<ChatSummary>("create_group", { name, members }),
  renameGroup: (chatId: string, name: string) => invoke<ChatSummary>("rename_group", { chatId, name }),
  addMember: (chatId: string, userId: string) => invoke<ChatSummary>("add_member", { chatId, userId }),
  removeMember: (chatId: string, userId: string) => invoke<ChatSummary>("remove_member", { chatId, userId }),
  leaveGroup: (chatId: string) => invoke<void>("leave_group", { chatId }),
  deleteChat: (chatId: string) => invoke<void>("delete_chat", { chatId }),
};

export function onEvent(handler: (event: EngineEvent) => void): Promise<UnlistenFn> {
  return listen<EngineEvent>("natter://event", (e) => handler(e.payload));
}

/** The shell dropped events the UI was too slow to take: reload state. */
export function onResync(handler: () => void): Promise<UnlistenFn> {
  return listen<null>("natter://resync", () => handler());
}

export function onOpenChat(handler: (chatId: string) => void): Promise<UnlistenFn> {
  return listen<string>("natter://open-chat", (e) => handler(e.payload));
}

/** A server picture path as a URL of the app's `natter-pic` scheme. */
export function pictureUrl(path: string): string {
  return navigator.userAgent.includes("Windows") ? `http://natter-pic.localhost${path}` : `natter-pic://localhost${path}`;
}
