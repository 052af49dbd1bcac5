import { beforeEach, describe, expect, it, vi } from "vitest";
import type { ChatList, EngineEvent, MessageView, Startup } from "./backend";
import { ann, bob, chat, message } from "./fixtures";

const chats = vi.fn<() => Promise<ChatList>>(async () => ({ chats: [], unreadTotal: 0, version: 1 }));
const history = vi.fn<(chatId: string, before: number | null) => Promise<MessageView[]>>();
const startup = vi.fn<() => Promise<Startup>>();
const discard = vi.fn<(clientId: string) => Promise<void>>(async () => {});
const send = vi.fn<(chatId: string, content: string) => Promise<MessageView>>();
const logout = vi.fn<() => Promise<void>>(async () => {});
const drafts = vi.fn<() => Promise<Record<string, string>>>(async () => ({}));
const setDraft = vi.fn<(chatId: string, text: string) => Promise<void>>(async () => {});
const typists = vi.fn<() => Promise<Record<string, string[]>>>(async () => ({}));
/** The UI's event handler, once it listens. */
let deliver: ((event: EngineEvent) => void) | null = null;
vi.mock("./backend", async (original) => ({
  ...(await original<typeof import("./backend")>()),
  backend: { history, chats, startup, discard, send, logout, drafts, setDraft, typists, setActiveChat: vi.fn(async () => {}) },
  onEvent: vi.fn(async (handler: (event: EngineEvent) => void) => { deliver = handler; return () => {}; }),
  onOpenChat: vi.fn(async () => () => {}),
  onResync: vi.fn(async () => () => {}),
}));

const { AppState } = await import("./app.svelte");

/** A promise and the functions that settle it. */
function later<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((yes, no) => { resolve = yes; reject = no; });
  return { promise, resolve, reject };
}

const day = "2026-03-02T10:00:00";
const page = (from: number, to: number, chatId = "a") =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ ...message(from + i, bob, `m${from + i}`, day), chatId, id: `${chatId}${from + i}` }));

function appWithChats() {
  const app = new AppState();
  app.me = ann;
  app.chats = [chat("a", "A", day), chat("b", "B", day)];
  return app;
}

beforeEach(() => {
  history.mockReset(); chats.mockClear(); discard.mockClear();
  startup.mockResolvedValue({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "online", limits: new AppState().limits });
});

describe("AppState", () => {
  it("stops asking for older pages after one fails, and says why", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    expect(app.hasOlder).toBe(true);
    history.mockRejectedValueOnce({ error: "the server is unreachable" });
    await app.loadOlder();
    expect(app.hasOlder).toBe(false);
    expect(app.notice).toBe("the server is unreachable");
    await app.loadOlder();
    expect(history).toHaveBeenCalledTimes(2);
  });

  it("moves the new-messages marker up as older pages bring the unread that were not loaded", async () => {
    const app = appWithChats();
    app.chats = [{ ...chat("a", "A", day), unread: 15 }, chat("b", "B", day)];
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    // 15 unread, 10 loaded: the marker on the oldest loaded, for now, and
    // the view goes there rather than to the newest.
    expect(app.unreadFrom).toBe("m:a51");
    expect(app.unreadCount).toBe(15);
    expect([app.scrollToUnread, app.scrollToEnd]).toEqual([1, 0]);
    // Live messages after the opening do not move it.
    app.handle({ type: "message", message: { ...message(61, bob, "m61", day), chatId: "a", id: "a61" } });
    expect(app.messages.length).toBe(11);
    history.mockResolvedValueOnce(page(41, 50));
    await app.loadOlder();
    expect(app.unreadFrom).toBe("m:a46");
    history.mockResolvedValueOnce(page(31, 40));
    await app.loadOlder();
    expect(app.unreadFrom).toBe("m:a46");
  });

  it("puts the marker above the unread counted, not above messages that came during the opening", async () => {
    const app = appWithChats();
    const last = { ...message(60, bob, "m60", day), chatId: "a", id: "a60" };
    app.chats = [{ ...chat("a", "A", day), unread: 3, lastMessage: last }, chat("b", "B", day)];
    // a61 and a62 arrived while the page was on its way, after the count.
    history.mockResolvedValueOnce(page(51, 62));
    await app.openChat("a");
    expect(app.unreadFrom).toBe("m:a58");
    expect(app.unreadCount).toBe(3);
  });

  it("keeps the open chat as it is when it is opened again", async () => {
    const app = appWithChats();
    app.chats = [{ ...chat("a", "A", day), unread: 2 }, chat("b", "B", day)];
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    history.mockResolvedValueOnce(page(41, 50));
    await app.loadOlder();
    app.chats = [{ ...chat("a", "A", day), unread: 0 }, chat("b", "B", day)];
    const scrolled = app.scrollToEnd;
    await app.openChat("a");
    expect(history).toHaveBeenCalledTimes(2);
    expect(app.messages.length).toBe(20);
    expect(app.unreadFrom).toBe("m:a59");
    expect(app.scrollToEnd).toBe(scrolled + 1);
    // With news counted meanwhile (the window was not focused), it opens
    // afresh, marker and all.
    app.chats = [{ ...chat("a", "A", day), unread: 1 }, chat("b", "B", day)];
    history.mockResolvedValueOnce(page(51, 61));
    await app.openChat("a");
    expect(history).toHaveBeenCalledTimes(3);
    expect(app.unreadFrom).toBe("m:a61");
  });

  it("marks what came in the open chat while the window was not focused", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    expect(app.unreadFrom).toBeNull();
    for (const n of [61, 62]) {
      app.handle({ type: "message", message: { ...message(n, bob, `m${n}`, day), chatId: "a", id: `a${n}` } });
    }
    // Counted unread: the window was not focused. A list ahead of the
    // messages shown (its last one not here yet) places nothing.
    const a62 = { ...message(62, bob, "m62", day), chatId: "a", id: "a62" };
    const a63 = { ...message(63, bob, "m63", day), chatId: "a", id: "a63" };
    app.handle({ type: "chats", chats: [{ ...chat("a", "A", day), unread: 3, lastMessage: a63 }, chat("b", "B", day)], unreadTotal: 3, version: 9 });
    expect(app.unreadFrom).toBeNull();
    app.handle({ type: "chats", chats: [{ ...chat("a", "A", day), unread: 2, lastMessage: a62 }, chat("b", "B", day)], unreadTotal: 2, version: 10 });
    expect(app.unreadFrom).toBe("m:a61");
    expect(app.unreadCount).toBe(2);
    // Focused again, the engine marks them read: the marker stays.
    app.handle({ type: "chats", chats: [chat("a", "A", day), chat("b", "B", day)], unreadTotal: 0, version: 11 });
    expect(app.unreadFrom).toBe("m:a61");
  });

  it("takes an older page whose messages came as events first, and says when the chat's start is reached", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(41, 60));
    await app.openChat("a");
    const older = later<MessageView[]>();
    history.mockReturnValueOnce(older.promise);
    const loading = app.loadOlder();
    // The engine tells each message of a page it fetched as it stores it,
    // before the page's answer.
    for (const m of page(1, 40)) app.handle({ type: "message", message: m });
    older.resolve(page(1, 40));
    await loading;
    expect(app.messages).toHaveLength(60);
    expect(app.hasOlder).toBe(false);
  });

  it("drops an older page meant for an earlier opening of the same chat", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    const stale = later<MessageView[]>();
    history.mockReturnValueOnce(stale.promise);
    const loading = app.loadOlder();
    history.mockResolvedValueOnce(page(1, 5, "b"));
    await app.openChat("b");
    history.mockResolvedValueOnce(page(55, 64));
    await app.openChat("a");
    stale.resolve(page(1, 50));
    await loading;
    expect(app.messages.map((m) => m.seq)).toEqual([55, 56, 57, 58, 59, 60, 61, 62, 63, 64]);
    expect(app.hasOlder).toBe(true);
  });

  it("an older page still on its way from the last opening does not hold up the next opening's", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    const stale = later<MessageView[]>();
    history.mockReturnValueOnce(stale.promise);
    const loadingA = app.loadOlder();
    expect(app.loadingOlder).toBe(true);
    history.mockResolvedValueOnce(page(51, 60, "b"));
    await app.openChat("b");
    expect(app.loadingOlder).toBe(false);
    const older = later<MessageView[]>();
    history.mockReturnValueOnce(older.promise);
    const loadingB = app.loadOlder();
    expect(history).toHaveBeenLastCalledWith("b", 51);
    // A's page ends: B's is still loading.
    stale.resolve(page(41, 50));
    await loadingA;
    expect(app.loadingOlder).toBe(true);
    older.resolve(page(41, 50, "b"));
    await loadingB;
    expect(app.loadingOlder).toBe(false);
    expect(app.messages[0].id).toBe("b41");
  });

  it("says why a chat did not open only while it is the one open", async () => {
    const app = appWithChats();
    const failing = later<MessageView[]>();
    history.mockReturnValueOnce(failing.promise);
    const openingA = app.openChat("a");
    history.mockResolvedValueOnce(page(1, 5, "b"));
    await app.openChat("b");
    failing.reject({ error: "the server is unreachable" });
    await openingA;
    expect(app.activeId).toBe("b");
    expect(app.notice).toBe("");
  });

  it("after missed events, reads the chat list and the open chat's newest page again", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    const list = [chat("a", "A", day), chat("b", "B", day), chat("c", "C", day)];
    chats.mockResolvedValueOnce({ chats: list, unreadTotal: 3, version: 2 });
    history.mockResolvedValueOnce(page(53, 62));
    await app.resync();
    expect(app.chats.map((c) => c.id)).toEqual(["a", "b", "c"]);
    expect(app.unreadTotal).toBe(3);
    expect(app.messages.map((m) => m.seq)).toEqual([51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62]);
  });

  it("after missed events, reads the link's state again", async () => {
    const app = appWithChats();
    app.handle({ type: "connection", state: "connecting" });
    await app.resync();
    expect(app.connection).toBe("online");

    // A state told while the answer was on its way is newer than it.
    const answer = later<Startup>();
    startup.mockClear();
    startup.mockReturnValueOnce(answer.promise);
    const resyncing = app.resync();
    await vi.waitFor(() => expect(startup).toHaveBeenCalled());
    app.handle({ type: "connection", state: "offline" });
    answer.resolve({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "online", limits: app.limits });
    await resyncing;
    expect(app.connection).toBe("offline");
  });

  it("after missed events, reads who is typing again, unless told meanwhile", async () => {
    const app = appWithChats();
    app.handle({ type: "typing", chatId: "a", names: ["Bob"] });
    // Bob's "stopped" was among the events missed.
    typists.mockResolvedValueOnce({ b: ["Zoë"] });
    await app.resync();
    expect(app.typingIn("a")).toEqual([]);
    expect(app.typingIn("b")).toEqual(["Zoë"]);

    // A chat told while asking keeps what it was told; the others take the answer.
    const answer = later<Record<string, string[]>>();
    typists.mockClear();
    typists.mockReturnValueOnce(answer.promise);
    const resyncing = app.resync();
    await vi.waitFor(() => expect(typists).toHaveBeenCalled());
    app.handle({ type: "typing", chatId: "a", names: ["Bob"] });
    answer.resolve({ c: ["Cy"] });
    await resyncing;
    expect(app.typingIn("a")).toEqual(["Bob"]);
    expect(app.typingIn("b")).toEqual([]);
    expect(app.typingIn("c")).toEqual(["Cy"]);
  });

  it("after missing more than a page, shows the newest page alone and pages up from it", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    chats.mockResolvedValueOnce({ chats: app.chats, unreadTotal: 0, version: 2 });
    history.mockResolvedValueOnce(page(121, 170));
    await app.resync();
    // 61 to 120 are not shown between 60 and 121: the view starts at 121.
    expect(app.messages.map((m) => m.seq)).toEqual(page(121, 170).map((m) => m.seq));
    expect(app.hasOlder).toBe(true);
    history.mockResolvedValueOnce(page(71, 120));
    await app.loadOlder();
    expect(history).toHaveBeenLastCalledWith("a", 121);
    expect(app.messages.map((m) => m.seq)).toEqual(page(71, 170).map((m) => m.seq));
  });

  it("a view a resync started again pages up from its own start, whatever the old view waited for", async () => {
    const app = appWithChats();
    app.connection = "offline";
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    // Offline, past the cache: the old view waits for the link.
    history.mockResolvedValueOnce([]);
    await app.loadOlder();
    // Still offline at the resync, which finds more than a page missed.
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "offline", limits: app.limits });
    chats.mockResolvedValueOnce({ chats: app.chats, unreadTotal: 0, version: 2 });
    history.mockResolvedValueOnce(page(121, 170));
    await app.resync();
    history.mockResolvedValueOnce(page(71, 120));
    await app.loadOlder();
    expect(history).toHaveBeenLastCalledWith("a", 121);
    expect(app.messages.map((m) => m.seq)).toEqual(page(71, 170).map((m) => m.seq));
  });

  // Offline, or online as the UI last heard while the link dropped before
  // its event came: either way the engine answers from the cache, and an
  // empty page is the cache running out, not the chat's start.
  it.each(["offline", "online"] as const)("past the cache (the UI thinking itself %s), asks for older messages again once the link is back", async (thought) => {
    const app = appWithChats();
    app.connection = thought;
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    history.mockResolvedValueOnce([]);
    await app.loadOlder();
    expect(app.hasOlder).toBe(true);
    await app.loadOlder();
    expect(history).toHaveBeenCalledTimes(2);
    app.handle({ type: "connection", state: "offline" });
    history.mockResolvedValueOnce(page(1, 50));
    app.handle({ type: "connection", state: "online" });
    await vi.waitFor(() => expect(app.messages.map((m) => m.seq)).toEqual(page(1, 60).map((m) => m.seq)));
    expect(history).toHaveBeenLastCalledWith("a", 51);
    expect(app.hasOlder).toBe(false);
  });

  it("asks failed pictures to try again when the link comes back, not while it stays up", async () => {
    const { pictureRetries } = await import("./pictures.svelte");
    const app = appWithChats();
    app.connection = "offline";
    const before = pictureRetries.round;
    app.handle({ type: "connection", state: "connecting" });
    expect(pictureRetries.round).toBe(before);
    app.handle({ type: "connection", state: "online" });
    expect(pictureRetries.round).toBe(before + 1);
    app.handle({ type: "connection", state: "online" });
    expect(pictureRetries.round).toBe(before + 1);
  });

  it("scrolled past the cache while offline, asks again once a resync finds the link back", async () => {
    const app = appWithChats();
    app.connection = "offline";
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    history.mockResolvedValueOnce([]);
    await app.loadOlder();
    // The "online" event was among those missed; the resync reads the state.
    chats.mockResolvedValueOnce({ chats: app.chats, unreadTotal: 0, version: 2 });
    history.mockImplementation(async (_chatId, before) => (before === null ? page(51, 60) : page(1, 50)));
    await app.resync();
    await vi.waitFor(() => expect(app.messages.map((m) => m.seq)).toEqual(page(1, 60).map((m) => m.seq)));
    expect(app.hasOlder).toBe(false);
  });

  it("asks again at once when the link came back while an offline answer was on its way", async () => {
    const app = appWithChats();
    app.connection = "offline";
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    const empty = later<MessageView[]>();
    history.mockReturnValueOnce(empty.promise);
    const asking = app.loadOlder();
    app.handle({ type: "connection", state: "online" });
    history.mockResolvedValueOnce(page(1, 50));
    empty.resolve([]);
    await asking;
    await vi.waitFor(() => expect(app.messages.map((m) => m.seq)).toEqual(page(1, 60).map((m) => m.seq)));
  });

  it("puts a send that failed back as its chat's draft, unless one was begun there or the session ended", async () => {
    const app = appWithChats();
    history.mockResolvedValue([]);
    await app.openChat("a");
    send.mockRejectedValueOnce({ error: "too long" });
    expect(await app.send("first try")).toBe(false);
    expect(app.draftOf("a")).toBe("first try");
    app.setDraft("a", "");
    const failing = later<MessageView>();
    send.mockReturnValueOnce(failing.promise);
    const sending = app.send("second try");
    await app.openChat("b");
    app.setDraft("a", "something newer");
    failing.reject({ error: "too long" });
    expect(await sending).toBe(false);
    expect(app.draftOf("a")).toBe("something newer");
    expect(app.notice).toBe("");
    const late = later<MessageView>();
    send.mockReturnValueOnce(late.promise);
    const lastSend = app.send("after logout");
    app.handle({ type: "sessionEnded", reason: "" });
    late.reject({ error: "not logged in" });
    await lastSend;
    expect(app.draftOf("b")).toBe("");
    history.mockReset();
  });

  it("keeps no draft of a send that failed because its sender was removed from the group meanwhile", async () => {
    const app = appWithChats();
    history.mockResolvedValue([]);
    await app.openChat("a");
    const failing = later<MessageView>();
    send.mockReturnValueOnce(failing.promise);
    const sending = app.send("just as Bob removed me");
    app.handle({ type: "chats", chats: [chat("a", "A", day, { isGroup: true, left: true }), chat("b", "B", day)], unreadTotal: 0, version: 30 });
    failing.reject({ error: "you are not a member of this chat" });
    expect(await sending).toBe(false);
    expect(app.draftOf("a")).toBe("");
    expect(app.notice).toBe("you are not a member of this chat");
    history.mockReset();
  });

  it("drops an older page that comes back after a resync started the view again", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(51, 60));
    await app.openChat("a");
    const older = later<MessageView[]>();
    history.mockReturnValueOnce(older.promise);
    const loading = app.loadOlder();
    chats.mockResolvedValueOnce({ chats: app.chats, unreadTotal: 0, version: 2 });
    history.mockResolvedValueOnce(page(121, 170));
    await app.resync();
    older.resolve(page(1, 50));
    await loading;
    expect(app.messages.map((m) => m.seq)).toEqual(page(121, 170).map((m) => m.seq));
    expect(app.hasOlder).toBe(true);
  });

  it("gives each draft to the engine, which keeps it across restarts", () => {
    const app = appWithChats();
    setDraft.mockClear();
    app.setDraft("a", "half");
    app.setDraft("a", "");
    expect(setDraft.mock.calls).toEqual([["a", "half"], ["a", ""]]);
  });

  it("starts with the drafts the engine kept, and one typed meanwhile stays", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    chats.mockResolvedValueOnce({ chats: [chat("a", "A", day), chat("b", "B", day)], unreadTotal: 0, version: 1 });
    const saved = later<Record<string, string>>();
    drafts.mockReturnValueOnce(saved.promise);
    const booting = app.boot();
    await vi.waitFor(() => expect(drafts).toHaveBeenCalled());
    app.setDraft("b", "typed just now");
    saved.resolve({ a: "from before", b: "older" });
    await booting;
    expect([app.draftOf("a"), app.draftOf("b")]).toEqual(["from before", "typed just now"]);
  });

  it("starts without drafts when they cannot be read", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    drafts.mockRejectedValueOnce({ error: "the cache is busy" });
    await app.boot();
    expect(app.fatal).toBe("");
    expect(app.draftOf("a")).toBe("");
  });

  it("forgets the draft of a chat that leaves the list, or that the user left", () => {
    const app = appWithChats();
    app.setDraft("a", "for a");
    app.setDraft("b", "for b");
    app.setDraft("c", "for c");
    app.handle({ type: "chats", chats: [chat("a", "A", day), chat("c", "C", day, { left: true })], unreadTotal: 0, version: 5 });
    expect([app.draftOf("a"), app.draftOf("b"), app.draftOf("c")]).toEqual(["for a", "", ""]);
  });

  it("keeps each chat's draft until it is emptied or the session ends", () => {
    const app = appWithChats();
    app.setDraft("a", "half a thought");
    app.setDraft("b", "x");
    app.setDraft("b", "");
    expect([app.draftOf("a"), app.draftOf("b")]).toEqual(["half a thought", ""]);
    app.handle({ type: "sessionEnded", reason: "" });
    expect(app.draftOf("a")).toBe("");
  });

  it("forgets who was typing when the session ends", () => {
    const app = appWithChats();
    app.handle({ type: "typing", chatId: "a", names: ["Bob"] });
    expect(app.typingIn("a")).toEqual(["Bob"]);
    app.handle({ type: "sessionEnded", reason: "" });
    expect(app.typingIn("a")).toEqual([]);
  });

  it("keeps the newest reading of the chat list when an older one arrives after it", async () => {
    // Just logged in: the app asks for the list while the engine is still
    // catching up, and the caught-up list (an event) overtakes the answer.
    const app = new AppState();
    app.me = ann;
    const answer = later<ChatList>();
    chats.mockReturnValueOnce(answer.promise);
    const loading = app.loadChats();
    const caughtUp: EngineEvent = { type: "chats", chats: [chat("a", "A", day)], unreadTotal: 2, version: 8 };
    app.handle(caughtUp);
    answer.resolve({ chats: [], unreadTotal: 0, version: 7 });
    await loading;
    expect(app.chats.map((c) => c.id)).toEqual(["a"]);
    expect(app.unreadTotal).toBe(2);
    // A newer one is shown.
    app.handle({ type: "chats", chats: [chat("a", "A", day), chat("b", "B", day)], unreadTotal: 0, version: 9 });
    expect(app.chats.map((c) => c.id)).toEqual(["a", "b"]);
  });

  it("at boot, keeps what events said while startup's answer was on its way", async () => {
    const app = new AppState();
    const answer = later<Startup>();
    startup.mockClear();
    startup.mockReturnValueOnce(answer.promise);
    const booting = app.boot();
    await vi.waitFor(() => expect(startup).toHaveBeenCalled());
    // Listening before asking: the link came up after startup read "connecting".
    deliver?.({ type: "connection", state: "online" });
    answer.resolve({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    await booting;
    expect(app.connection).toBe("online");
    expect(app.me).toEqual(ann);
  });

  it("at boot, goes to the login screen, not an error, when the session ends while the list is on its way", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    const list = later<ChatList>();
    chats.mockReturnValueOnce(list.promise);
    const booting = app.boot();
    await vi.waitFor(() => expect(chats).toHaveBeenCalled());
    deliver?.({ type: "sessionEnded", reason: "the server no longer accepts this login" });
    list.reject({ error: "not logged in" });
    await booting;
    expect(app.fatal).toBe("");
    expect(app.me).toBeNull();
    expect(app.loginNote).toBe("the server no longer accepts this login");
  });

  it("at boot, goes to the login screen when the list's refusal comes before the session's end", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    chats.mockRejectedValueOnce({ error: "not logged in" });
    await app.boot();
    // The refusal's answer came back before the event that explains it.
    deliver?.({ type: "sessionEnded", reason: "the server no longer accepts this login" });
    expect(app.fatal).toBe("");
    expect(app.chatsError).toBe("");
    expect(app.me).toBeNull();
    expect(app.loginNote).toBe("the server no longer accepts this login");
  });

  it("at boot, says why the chat list could not be read, and goes on", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({ serverUrl: "http://localhost:8080", me: ann, ended: null, connection: "connecting", limits: app.limits });
    chats.mockRejectedValueOnce({ error: "the cache is busy" });
    await app.boot();
    expect(app.fatal).toBe("");
    expect(app.me).toEqual(ann);
    expect(app.chatsError).toBe("the cache is busy");
  });

  it("after a login, says why the chat list could not be read, and goes on", async () => {
    const app = new AppState();
    chats.mockRejectedValueOnce({ error: "the cache is busy" });
    await app.signedIn(ann);
    expect(app.me).toEqual(ann);
    expect(app.chatsError).toBe("the cache is busy");
    app.handle({ type: "chats", chats: [chat("a", "A", day)], unreadTotal: 0, version: 3 });
    expect(app.chats.map((c) => c.id)).toEqual(["a"]);
    expect(app.chatsError).toBe("");
  });

  it("at boot, says why a session the server ended before the page listened is over", async () => {
    const app = new AppState();
    startup.mockResolvedValueOnce({
      serverUrl: "http://localhost:8080", me: null, ended: "the server no longer accepts this login",
      connection: "offline", limits: app.limits,
    });
    await app.boot();
    expect(app.me).toBeNull();
    expect(app.loginNote).toBe("the server no longer accepts this login");
  });

  it("keeps a discarded message out when a page read before the discard arrives after it", async () => {
    const app = appWithChats();
    const failed = { ...message(null, ann, "too long", day, { clientId: "k1", status: "failed", error: "too long" }), chatId: "a" };
    history.mockResolvedValueOnce([...page(1, 3), failed]);
    await app.openChat("a");
    chats.mockResolvedValueOnce({ chats: app.chats, unreadTotal: 0, version: 2 });
    const inFlight = later<MessageView[]>();
    history.mockReturnValueOnce(inFlight.promise);
    const resyncing = app.resync();
    await app.discard(failed);
    expect(discard).toHaveBeenCalledWith("k1");
    expect(app.messages.map((m) => m.content)).toEqual(["m1", "m2", "m3"]);
    inFlight.resolve([...page(1, 3), failed]);
    await resyncing;
    expect(app.messages.map((m) => m.content)).toEqual(["m1", "m2", "m3"]);
  });

  it("shows a message again, and why, when the app could not discard it", async () => {
    const app = appWithChats();
    const failed = { ...message(null, ann, "too long", day, { clientId: "k1", status: "failed", error: "too long" }), chatId: "a" };
    history.mockResolvedValueOnce([...page(1, 2), failed]);
    await app.openChat("a");
    discard.mockRejectedValueOnce({ error: "the local cache is busy" });
    await app.discard(failed);
    expect(app.messages.map((m) => m.content)).toEqual(["m1", "m2", "too long"]);
    expect(app.notice).toBe("the local cache is busy");
  });

  it("discards once when clicked twice, and forgets discards at logout", async () => {
    const app = appWithChats();
    const failed = { ...message(null, ann, "too long", day, { clientId: "k1", status: "failed", error: "too long" }), chatId: "a" };
    history.mockResolvedValueOnce([...page(1, 2), failed]);
    await app.openChat("a");
    const first = later<void>();
    discard.mockReturnValueOnce(first.promise);
    const clicked = app.discard(failed);
    await app.discard(failed);
    first.resolve();
    await clicked;
    expect(discard).toHaveBeenCalledTimes(1);
    // An event read before the discard, arriving after it, stays out.
    app.handle({ type: "message", message: failed });
    expect(app.messages.map((m) => m.content)).toEqual(["m1", "m2"]);
    // Another account's session starts with nothing discarded.
    app.handle({ type: "sessionEnded", reason: "" });
    app.me = ann;
    app.chats = [chat("a", "A", day)];
    history.mockResolvedValueOnce([failed]);
    await app.openChat("a");
    expect(app.messages.map((m) => m.content)).toEqual(["too long"]);
  });

  it("a logout that fails to delete the saved session still logs out, and says so", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(1, 2));
    await app.openChat("a");
    logout.mockRejectedValueOnce({ error: "Is a directory (os error 21)" });
    await app.logout();
    expect(app.me).toBeNull();
    expect(app.activeId).toBeNull();
    expect(app.loginNote).toBe("Logged out, but the saved session could not be deleted: Is a directory (os error 21)");
    await app.logout();
    expect(app.loginNote).toBe("");
  });

  it("leaves out the messages of an older page an earlier opening asked for, which would leave a gap", async () => {
    const app = appWithChats();
    history.mockResolvedValueOnce(page(151, 200));
    await app.openChat("a");
    history.mockResolvedValueOnce(page(101, 150));
    await app.loadOlder();
    const stale = later<MessageView[]>();
    history.mockReturnValueOnce(stale.promise);
    const loading = app.loadOlder();
    history.mockResolvedValueOnce(page(1, 5, "b"));
    await app.openChat("b");
    // Opened again: its page is on its way when the engine tells the first
    // of the stale page's messages, and the rest after.
    const newest = later<MessageView[]>();
    history.mockReturnValueOnce(newest.promise);
    const opening = app.openChat("a");
    const told = page(51, 100);
    for (const m of told.slice(0, 10)) app.handle({ type: "message", message: m });
    newest.resolve(page(151, 200));
    await opening;
    for (const m of told.slice(10)) app.handle({ type: "message", message: m });
    stale.resolve(told);
    await loading;
    expect(app.messages.map((m) => m.seq)).toEqual(page(151, 200).map((m) => m.seq));
    history.mockResolvedValueOnce(page(101, 150));
    await app.loadOlder();
    expect(history).toHaveBeenLastCalledWith("a", 151);
    expect(app.messages.map((m) => m.seq)).toEqual(page(101, 200).map((m) => m.seq));
  });

  it("shows no chat list of a session that ended, told or answered after the logout", async () => {
    const app = appWithChats();
    const answer = later<ChatList>();
    chats.mockReturnValueOnce(answer.promise);
    const loading = app.loadChats();
    await app.logout();
    app.handle({ type: "chats", chats: [chat("a", "A", day)], unreadTotal: 1, version: 20 });
    answer.resolve({ chats: [chat("b", "B", day)], unreadTotal: 0, version: 21 });
    await loading;
    expect(app.chats).toEqual([]);
    expect(app.unreadTotal).toBe(0);
    // The next login's list shows.
    chats.mockResolvedValueOnce({ chats: [chat("c", "C", day)], unreadTotal: 0, version: 22 });
    await app.signedIn(bob);
    expect(app.chats.map((c) => c.id)).toEqual(["c"]);
  });
});
