import { fireEvent, render, screen } from "@testing-library/svelte";
import { flushSync } from "svelte";
import { describe, expect, it, vi } from "vitest";
import { ann, bob, chat, message } from "../lib/fixtures";

vi.mock("../lib/backend", async (original) => ({
  ...(await original<typeof import("../lib/backend")>()),
  backend: { typing: vi.fn(async () => {}), setActiveChat: vi.fn(async () => {}), history: vi.fn(async () => []), setDraft: vi.fn(async () => {}) },
}));

// jsdom has no ResizeObserver, which the message list's virtualizer asks
// for, nor scrollTo and scrollBy, with which it follows new messages and
// keeps its place when an older page comes; nothing here
// depends on sizes.
globalThis.ResizeObserver ??= class {
  observe() {}
  unobserve() {}
  disconnect() {}
};
Element.prototype.scrollTo ??= function () {};
Element.prototype.scrollBy ??= function () {};

const { AppState } = await import("../lib/app.svelte");
const ChatView = (await import("./ChatView.svelte")).default;

const day = "2026-03-02T10:00:00";

function appIn(chatId: string) {
  const app = new AppState();
  app.me = ann;
  app.chats = [chat("a", "Bob", day), chat("b", "Zoë", day)];
  app.activeId = chatId;
  return app;
}

describe("ChatView", () => {
  it("keeps what is written in a chat as its draft, and gives it back when the chat is opened again", async () => {
    const app = appIn("a");
    render(ChatView, { app });
    const box = () => screen.getByRole("textbox") as HTMLTextAreaElement;
    await fireEvent.input(box(), { target: { value: "half a thought" } });
    expect(app.draftOf("a")).toBe("half a thought");

    // Another chat: its own, empty composer; nothing carried over.
    app.activeId = "b";
    flushSync();
    expect(box().value).toBe("");
    await fireEvent.input(box(), { target: { value: "for Zoë" } });

    // Back: each chat's draft where it was left.
    app.activeId = "a";
    flushSync();
    expect(box().value).toBe("half a thought");
    app.activeId = "b";
    flushSync();
    expect(box().value).toBe("for Zoë");
  });

  it("says when a chat is short of messages the server failed to give, until they come", () => {
    const app = appIn("a");
    app.chats = [chat("a", "Bob", day, { behind: true }), chat("b", "Zoë", day)];
    const { container } = render(ChatView, { app });
    expect(container.querySelector(".behind-note")?.textContent).toContain("could not be loaded yet");
    app.chats = [chat("a", "Bob", day), chat("b", "Zoë", day)];
    flushSync();
    expect(container.querySelector(".behind-note")).toBeNull();
  });
  it("tells screen readers of a message that comes, not of the history shown when the chat opens", async () => {
    const app = appIn("a");
    app.messages = [message(1, bob, "from before", day, { chatId: "a" })];
    app.historyLoaded = true;
    const { container } = render(ChatView, { app });
    expect(container.querySelector("[role='log']")).toBeNull();
    const status = () => container.querySelector(".messages [role='status']")?.textContent;
    expect(status()).toBe("");
    // Announcing waits a tick: a macrotask later, anything due is done.
    const settled = () => new Promise((done) => setTimeout(done, 0));
    app.messages = [...app.messages, message(2, ann, "mine", day, { chatId: "a" })];
    flushSync();
    await settled();
    expect(status()).toBe("");
    app.messages = [...app.messages, message(3, bob, "just now", day, { chatId: "a" })];
    flushSync();
    await vi.waitFor(() => expect(status()).toBe("Bob: just now"));
    // The same words again are news again: the line empties first.
    app.messages = [...app.messages, message(4, bob, "just now", day, { chatId: "a" })];
    flushSync();
    expect(status()).toBe("");
    await vi.waitFor(() => expect(status()).toBe("Bob: just now"));
    // An older page is history: nothing is read out.
    app.messages = [message(0, bob, "long ago", day, { chatId: "a" }), ...app.messages];
    flushSync();
    await settled();
    expect(status()).toBe("Bob: just now");
  });
});
