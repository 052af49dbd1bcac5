// The app's state, in one place: filled from the Rust side's commands and
// kept current by its events. Components read it and call its actions;
// only this file and backend.ts know that Tauri exists.
import {
  backend, errorText, onEvent, onOpenChat, onResync,
  type ChatList, type ChatSummary, type ConnectionState, type EngineEvent, type Limits, type MessageView, type User,
} from "./backend";
import { SvelteMap } from "svelte/reactivity";
import { firstUnread, fromSeq, merge, messageKey, newestSeq, oldestSeq, withoutDiscarded } from "./history";
import { retryBrokenPictures } from "./pictures.svelte";

/** The side panel over the chat list, if one is open. */
export type Panel = null | "search" | "newGroup" | "info";

const NO_LIMITS: Limits = { contentMaxChars: 4096, nameMaxChars: 64, passwordMinChars: 8, chatNameMaxChars: 64 };

/** The key of a chat's last message as the list shows it, when that one is
 *  stored (one of ours still to go out sorts after all of them): what the
 *  list's unread count is counted up to. */
function lastStoredKey(chat: ChatSummary | null | undefined): string | null {
  const listed = chat?.lastMessage;
  return listed && listed.seq !== null ? messageKey(listed) : null;
}

export class AppState {
  booted = $state(false);
  fatal = $state("");
  me = $state<User | null>(null);
  serverUrl = $state("");
  limits = $state<Limits>(NO_LIMITS);
  connection = $state<ConnectionState>("offline");
  chats = $state.raw<ChatSummary[]>([]);
  unreadTotal = $state(0);
  /** Why the user is back at the login screen, when it was not their choice. */
  loginNote = $state("");

  activeId = $state<string | null>(null);
  messages = $state.raw<MessageView[]>([]);
  /** The open chat's first page is here (an empty chat is empty, not loading). */
  historyLoaded = $state(false);
  hasOlder = $state(false);
  loadingOlder = $state(false);
  unreadFrom = $state<string | null>(null);
  unreadCount = $state(0);
  /** The newest message when the chat was opened: the unread counted
   *  then are at or above it, so the marker is found among the messages up
   *  to it (again as older pages load; live ones after it do not count). */
  private unreadThrough: string | null = null;
  /** Bumped to ask the message list to scroll to the newest message. */
  scrollToEnd = $state(0);
  /** Bumped when a chat opens with news: the view shows its marker. */
  scrollToUnread = $state(0);
  typing = $state.raw<Record<string, string[]>>({});
  panel = $state<Panel>(null);
  /** What the chat list is narrowed to: kept here, not in the side bar,
   *  which a panel replaces while it is open. */
  chatFilter = $state("");
  /** An action's failure, shown until the next action. */
  notice = $state("");
  /** Why the chat list could not be read at start or after a login, until
   *  a list comes (the link's catch-up sends one). */
  chatsError = $state("");

  /** Counts chat openings: an answer for an earlier opening (even of the
   *  same chat, A→B→A) is dropped rather than merged into the new view. */
  private opened = 0;
  /** Counts the times a resync started the open chat's view again from
   *  its newest page: an older page asked for before is not for it. */
  private restarts = 0;
  /** Counts `connection` events: a state read before the latest of them
   *  is older than what it said. */
  private connectionTold = 0;
  /** Counts `typing` events, for the same reason; per chat, the count
   *  at its latest. */
  private typingTold = 0;
  private typingToldAt: Record<string, number> = {};
  /** The version of the chat list shown (`ChatList`): an older list that
   *  arrives later is dropped. */
  private chatsVersion = 0;
  /** A session's end told by an event: boot keeps it over what the
   *  `startup` answer, read before it, says. */
  private heardSessionEnded = false;
  /** Client ids of messages the user discarded: kept out of the view when
   *  a page or event read before the discard arrives after it. */
  private discarded = new Set<string>();
  /** What the user was writing in each chat, kept when they switch chats
   *  and across restarts (as WhatsApp and Signal keep a draft) until it is
   *  sent or logout. Each change goes to the engine, which keeps it in the
   *  cache; the chat list shows the other chats' drafts. */
  private drafts = new SvelteMap<string, string>();
  /** An older page came back empty while offline: the cache ran out, not
   *  the chat. It is asked for again when the link is back, not before
   *  (the message list would otherwise ask again and again). */
  private olderWhenOnline = false;
  /** Counts sessions ended: an answer for an earlier one changes nothing. */
  private session = 0;

  active = $derived(this.chats.find((chat) => chat.id === this.activeId) ?? null);

  async boot(): Promise<void> {
    try {
      // Listening first: a change while startup's answer is on its way
      // comes as an event (the answer, read before it, would be older).
      await onEvent((event) => this.handle(event));
      await onOpenChat((chatId) => void this.openChat(chatId));
      await onResync(() => void this.resync().catch((err) => { this.notice = errorText(err); }));
      const told = this.connectionTold;
      const start = await backend.startup();
      this.serverUrl = start.serverUrl;
      this.limits = start.limits;
      if (this.connectionTold === told) this.connection = start.connection;
      if (!this.heardSessionEnded) {
        this.me = start.me;
        // Ended before this page listened: the login screen says why.
        if (!start.me && start.ended) this.loginNote = start.ended;
      }
    } catch (err) {
      this.fatal = errorText(err);
    }
    if (this.me && !this.fatal) await this.loadSession();
    this.booted = true;
  }

  handle(event: EngineEvent): void {
    switch (event.type) {
      case "connection":
        this.connectionTold += 1;
        this.setConnection(event.state);
        break;
      case "chats": this.setChats(event); break;
      case "message":
        if (event.message.chatId === this.activeId && !this.belowView(event.message)) {
          this.show(merge(this.messages, [event.message]));
        }
        break;
      case "typing":
        this.typingTold += 1;
        this.typingToldAt[event.chatId] = this.typingTold;
        this.typing = { ...this.typing, [event.chatId]: event.names };
        break;
      case "sessionEnded":
        this.signedOut(event.reason);
        this.heardSessionEnded = true;
        break;
      case "notify": break;
      case "chatRead": break;
      // The shell closes the notifications; the login screen comes from
      // logout's answer or sessionEnded.
      case "signedOut": break;
    }
  }

  /** A message older than the oldest the open chat shows: the engine tells
   *  each message of an older page it fetched, and that page may be an
   *  earlier opening's. Merged, it would stand apart from the view, and the
   *  next older page, asked for below it, would skip what lies between.
   *  It comes with its page, if the view asks for it. */
  private belowView(message: MessageView): boolean {
    const oldest = oldestSeq(this.messages);
    return this.historyLoaded && message.seq !== null && oldest !== null && message.seq < oldest;
  }

  /** Shows `list` unless a later reading is shown already, or the session
   *  it was read in has ended (an event or answer on its way at a logout
   *  would show the last account's chats at the next login). */
  private setChats(list: ChatList): void {
    if (!this.me || list.version < this.chatsVersion) return;
    this.chatsVersion = list.version;
    this.chatsError = "";
    this.chats = list.chats;
    this.unreadTotal = list.unreadTotal;
    // A chat gone, or left (nothing more to write in it), takes its draft.
    for (const id of [...this.drafts.keys()]) if (!list.chats.some((chat) => chat.id === id && !chat.left)) this.drafts.delete(id);
    // A chat deleted (or gone from a new login's list): its view closes.
    if (this.activeId && !list.chats.some((chat) => chat.id === this.activeId)) this.closeChat();
    else this.markNewsInOpenChat();
  }

  /** The open chat counts unread only while the window is not focused:
   *  then the marker goes above what came meanwhile, and stays there once
   *  the window is back (and the engine has marked it read), as at an
   *  opening. */
  private markNewsInOpenChat(): void {
    const unread = this.active?.unread ?? 0;
    // Counted up to the list's last message: not placed until the view has
    // it (a list can come before the message's own event).
    const through = lastStoredKey(this.active);
    if (unread === 0 || !this.historyLoaded || !this.shows(through)) return;
    this.unreadCount = unread;
    this.unreadThrough = through;
    this.placeMarker();
  }

  async loadChats(): Promise<void> {
    const session = this.session;
    const list = await backend.chats();
    if (this.session === session) this.setChats(list);
  }

  /** Events were missed (the UI fell behind): the chat list and the open
   *  chat's newest page are read again; the rest of the view stays, unless
   *  the page does not reach it. Then what was missed is more than a page,
   *  and the view starts again from the page: older pages load from its
   *  oldest message as the user scrolls up, where a view keeping both
   *  would have a gap that no page ever fills. */
  /** The link's state; back online, an older page asked for offline is
   *  asked for again, and so are pictures that failed. */
  private setConnection(state: ConnectionState): void {
    const cameBack = state === "online" && this.connection !== "online";
    this.connection = state;
    if (cameBack) retryBrokenPictures();
    if (state === "online" && this.olderWhenOnline) {
      this.olderWhenOnline = false;
      void this.loadOlder();
    }
  }

  async resync(): Promise<void> {
    if (!this.me) return;
    // The link's state is read again: its event may be among those missed.
    const told = this.connectionTold;
    const start = await backend.startup();
    if (this.connectionTold === told && start.me !== null) this.setConnection(start.connection);
    // And who is typing: the engine tells only changes, so a missed "stopped"
    // would leave its line on screen. Not worth failing the rest for.
    const typingTold = this.typingTold;
    const typists = await backend.typists().catch(() => null);
    if (typists) this.typing = this.typingSince(typingTold, typists);
    await this.loadChats();
    const chatId = this.activeId;
    if (!chatId) return;
    const opening = this.opened;
    const page = await backend.history(chatId, null);
    if (this.opened !== opening) return;
    const shown = newestSeq(this.messages);
    const from = oldestSeq(page);
    if (shown !== null && from !== null && from > shown + 1) {
      this.show(merge(page, fromSeq(this.messages, from)));
      this.restarts += 1;
      this.hasOlder = from > 1;
      // A wait for the link was the old view's: this one pages up from its
      // own start.
      this.olderWhenOnline = false;
    } else {
      this.show(merge(this.messages, page));
    }
    this.markNewsInOpenChat();
  }

  /** Who is typing, from `read` (asked when `told` events had come),
   *  except in chats with an event since, which is newer. */
  private typingSince(told: number, read: Record<string, string[]>): Record<string, string[]> {
    const newer = (chatId: string) => (this.typingToldAt[chatId] ?? 0) > told;
    const typing: Record<string, string[]> = {};
    for (const [chatId, names] of Object.entries(read)) if (!newer(chatId)) typing[chatId] = names;
    for (const [chatId, names] of Object.entries(this.typing)) if (newer(chatId)) typing[chatId] = names;
    return typing;
  }

  /** Just logged in: the chat list is read now (`loadSession`). One that
   *  cannot be read says why (`chatsError`); a list comes anyway once the
   *  link has caught up (an event), so the app goes on. */
  async signedIn(me: User): Promise<void> {
    this.me = me;
    this.loginNote = "";
    await this.loadSession();
  }

  /** The session's chat list and drafts, read at start or after a login.
   *  A list refused because the session was ending (its answer may come
   *  before the event that says so) is the login screen's to tell. */
  private async loadSession(): Promise<void> {
    const session = this.session;
    const version = this.chatsVersion;
    try {
      await Promise.all([this.loadChats(), this.loadDrafts()]);
    } catch (err) {
      if (this.session === session && this.chatsVersion === version) this.chatsError = errorText(err);
    }
  }

  /** The drafts the engine kept (from before a restart); one begun since
   *  stays as it is. Without them the app still works: a failure to read
   *  them is no reason to stop. */
  private async loadDrafts(): Promise<void> {
    const session = this.session;
    const saved = await backend.drafts().catch(() => ({}) as Record<string, string>);
    if (this.session !== session) return;
    for (const [chatId, text] of Object.entries(saved)) {
      if (!this.drafts.has(chatId)) this.drafts.set(chatId, text);
    }
  }

  private signedOut(reason: string): void {
    this.me = null;
    this.chatsError = "";
    this.loginNote = reason;
    this.chats = [];
    this.session += 1;
    this.discarded.clear();
    this.drafts.clear();
    this.typing = {};
    this.closeChat();
    this.panel = null;
    this.chatFilter = "";
  }

  /** How many messages a logout would delete unsent; 0 when that cannot
   *  be read (the logout then goes ahead unasked, as it would anyway). */
  async unsentCount(): Promise<number> {
    try {
      return await backend.unsent();
    } catch {
      return 0;
    }
  }

  /** Logs out. The engine ends the session even when its files cannot
   *  be deleted; the login screen then says so, as the app would resume
   *  that session at its next start. */
  async logout(): Promise<void> {
    try {
      await backend.logout();
      this.signedOut("");
    } catch (err) {
      this.signedOut(`Logged out, but the saved session could not be deleted: ${errorText(err)}`);
    }
  }

  async openChat(chatId: string): Promise<void> {
    const chat = this.chats.find((c) => c.id === chatId);
    // Open already (its row clicked again, its notification) and nothing
    // new to mark or to try again: it stays as it is, older pages and
    // marker included, scrolled to the newest.
    if (chatId === this.activeId && this.historyLoaded && !this.notice && !chat?.unread) {
      if (this.panel === "info") this.panel = null;
      this.scrollToEnd += 1;
      return;
    }
    const opening = ++this.opened;
    this.olderWhenOnline = false;
    // An older page still on its way is the last opening's.
    this.loadingOlder = false;
    this.activeId = chatId;
    this.messages = [];
    this.historyLoaded = false;
    this.hasOlder = false;
    this.notice = "";
    // No marker of an earlier opening: an older page must not move it.
    this.unreadFrom = null;
    this.unreadCount = 0;
    this.unreadThrough = null;
    if (this.panel === "info") this.panel = null;
    // The unread counted are the newest up to the chat's last message as
    // the list showed it: what arrives while the page is on its way comes
    // after them, and must not push the marker down.
    const unread = chat?.unread ?? 0;
    const lastCounted = lastStoredKey(chat);
    try {
      await backend.setActiveChat(chatId);
      const page = await backend.history(chatId, null);
      if (this.opened !== opening) return;
      // Events that came in while the page was on its way stay, but for
      // older ones than it holds (`belowView`).
      const from = oldestSeq(page);
      const told = from === null ? this.messages : fromSeq(this.messages, from);
      this.show(merge(page, told));
      this.hasOlder = (oldestSeq(this.messages) ?? 1) > 1;
      this.historyLoaded = true;
      this.unreadCount = unread;
      const newest = this.messages.at(-1);
      this.unreadThrough = this.shows(lastCounted) ? lastCounted : newest ? messageKey(newest) : null;
      this.placeMarker();
      if (this.unreadFrom !== null) this.scrollToUnread += 1;
      else this.scrollToEnd += 1;
    } catch (err) {
      // Another chat opened meanwhile: not its notice.
      if (this.opened !== opening) return;
      this.notice = errorText(err);
    }
  }

  /** Whether the view holds the message keyed `key`. */
  private shows(key: string | null): boolean {
    return key !== null && this.messages.some((m) => messageKey(m) === key);
  }

  closeChat(): void {
    this.opened += 1;
    this.olderWhenOnline = false;
    this.loadingOlder = false;
    this.activeId = null;
    this.messages = [];
    this.unreadFrom = null;
    this.unreadThrough = null;
    void backend.setActiveChat(null).catch(() => {});
  }

  /** The page before the oldest loaded message, when scrolled to the top. */
  async loadOlder(): Promise<void> {
    const chatId = this.activeId;
    const opening = this.opened;
    const restarts = this.restarts;
    const before = oldestSeq(this.messages);
    if (!chatId || !this.hasOlder || this.loadingOlder || this.olderWhenOnline || before === null) return;
    this.loadingOlder = true;
    // Asked offline, the engine answers from the cache alone.
    const offline = this.connection !== "online";
    try {
      const page = await backend.history(chatId, before);
      // Another opening, or a view a resync started again: not this page's.
      // (The page's own messages may have come as events already.)
      if (this.opened !== opening || this.restarts !== restarts) return;
      if (page.length === 0) {
        // Seqs start at 1: nothing before a later one is the cache running
        // out (offline, or the link dropped while the page was asked for,
        // before its event came), not the chat's start. Asked again once
        // the link is next online; at once if it came back meanwhile.
        if (offline && this.connection === "online") queueMicrotask(() => void this.loadOlder());
        else this.olderWhenOnline = true;
        return;
      }
      this.show(merge(this.messages, page));
      if (this.unreadFrom !== null) this.placeMarker();
      this.hasOlder = (oldestSeq(this.messages) ?? 1) > 1;
    } catch (err) {
      if (this.opened !== opening) return;
      // No retry loop: opening the chat again tries again.
      this.hasOlder = false;
      this.notice = errorText(err);
    } finally {
      // Another opening cleared it, and may be loading a page of its own.
      if (this.opened === opening) this.loadingOlder = false;
    }
  }

  /** The marker above the first of the unread counted at the opening: the
   *  newest `unreadCount` from others up to `unreadThrough`. Placed again
   *  after each older page, which may bring the first of them. */
  private placeMarker(): void {
    if (this.unreadThrough === null) return;
    const through = this.messages.findIndex((m) => messageKey(m) === this.unreadThrough);
    if (through < 0) return;
    this.unreadFrom = firstUnread(this.messages.slice(0, through + 1), this.unreadCount);
  }

  async send(content: string): Promise<boolean> {
    const chatId = this.activeId;
    const opening = this.opened;
    const session = this.session;
    if (!chatId) return false;
    try {
      const message = await backend.send(chatId, content);
      if (this.opened !== opening) return true;
      this.show(merge(this.messages, [message]));
      this.unreadFrom = null;
      this.scrollToEnd += 1;
      this.notice = "";
      return true;
    } catch (err) {
      // The text goes back as the chat's draft, unless a newer one was
      // begun there, the session ended, or the user is no longer in the
      // chat (removed while it was on its way: nothing more can be written
      // there, and the list would show the draft); the reason shows only
      // in that chat.
      const left = this.chats.find((chat) => chat.id === chatId)?.left ?? false;
      if (this.session === session && !left && !this.drafts.get(chatId)) this.setDraft(chatId, content);
      if (this.opened === opening) this.notice = errorText(err);
      return false;
    }
  }

  /** The text being written in `chatId`, "" when none. */
  draftOf(chatId: string): string {
    return this.drafts.get(chatId) ?? "";
  }

  setDraft(chatId: string, text: string): void {
    if (text) this.drafts.set(chatId, text);
    else this.drafts.delete(chatId);
    // A plain command: the engine keeps the last one asked.
    void backend.setDraft(chatId, text).catch(() => {});
  }

  /** Drops a failed (or pending) message. It leaves the view at once and
   *  stays out (`show`); if the app could not drop it, it comes back. */
  async discard(message: MessageView): Promise<void> {
    const key = message.clientId;
    // A second click while the first is on its way changes nothing.
    if (!key || this.discarded.has(key)) return;
    this.discarded.add(key);
    this.show(this.messages);
    try {
      await backend.discard(key);
    } catch (err) {
      this.discarded.delete(key);
      if (message.chatId !== this.activeId) return;
      this.show(merge(this.messages, [message]));
      this.notice = errorText(err);
    }
  }

  /** Puts `messages` on view, less any the user discarded. */
  private show(messages: MessageView[]): void {
    this.messages = withoutDiscarded(messages, this.discarded);
  }

  typingIn(chatId: string): string[] {
    return this.typing[chatId] ?? [];
  }

  /** Runs a panel's action; its error shows in the panel, so rethrow. */
  async openDirect(user: User): Promise<void> {
    const chat = await backend.openDirect(user.id);
    await this.loadChats();
    this.panel = null;
    await this.openChat(chat.id);
  }

  async createGroup(name: string, members: string[]): Promise<void> {
    const chat = await backend.createGroup(name, members);
    await this.loadChats();
    this.panel = null;
    await this.openChat(chat.id);
  }

  // A group changed by the user: the engine has sent the chat list, read
  // after the change and numbered, before it answers, so the answer (built
  // from the server's chat, unnumbered) is not put into the list.

  async renameGroup(chatId: string, name: string): Promise<void> {
    await backend.renameGroup(chatId, name);
  }

  async addMember(chatId: string, userId: string): Promise<void> {
    await backend.addMember(chatId, userId);
  }

  async removeMember(chatId: string, userId: string): Promise<void> {
    await backend.removeMember(chatId, userId);
  }

  /** The group stays, readable, as left (the engine's list says so). */
  async leaveGroup(chatId: string): Promise<void> {
    await backend.leaveGroup(chatId);
    this.panel = null;
  }

  /** A chat one is no longer in, off this device. */
  async deleteChat(chatId: string): Promise<void> {
    await backend.deleteChat(chatId);
    this.chats = this.chats.filter((c) => c.id !== chatId);
    if (this.activeId === chatId) this.closeChat();
  }
}

export const app = new AppState();
