import { fireEvent, render, screen } from "@testing-library/svelte";
import { flushSync } from "svelte";
import { describe, expect, it, vi } from "vitest";
import { ann, chat } from "./lib/fixtures";

vi.mock("./lib/backend", async (original) => ({
  ...(await original<typeof import("./lib/backend")>()),
  backend: {
    typing: vi.fn(async () => {}), setActiveChat: vi.fn(async () => {}), history: vi.fn(async () => []),
    setDraft: vi.fn(async () => {}), searchUsers: vi.fn(async () => []), deleteChat: vi.fn(async () => {}),
    leaveGroup: vi.fn(async () => {}), unsent: vi.fn(async () => 0), logout: vi.fn(async () => {}),
  },
}));

// jsdom has no ResizeObserver, which the message list's virtualizer asks
// for; nothing here depends on sizes.
globalThis.ResizeObserver ??= class {
  observe() {}
  unobserve() {}
  disconnect() {}
};

const { backend } = await import("./lib/backend");
const { AppState } = await import("./lib/app.svelte");
const App = (await import("./App.svelte")).default;

const day = "2026-03-02T10:00:00";

function signedIn() {
  const app = new AppState();
  app.booted = true;
  app.me = ann;
  app.chats = [chat("a", "Bob", day), chat("b", "Zoë", day)];
  return app;
}

describe("App", () => {
  it("gives the keyboard back after Escape: to the composer, then to the closed chat's row", async () => {
    const app = signedIn();
    await app.openChat("b");
    app.panel = "search";
    const { container } = render(App, { app });
    const search = container.querySelector<HTMLInputElement>(".side input")!;
    search.focus();
    expect(document.activeElement).toBe(search);
    await fireEvent.keyDown(window, { key: "Escape" });
    await vi.waitFor(() => expect(document.activeElement).toBe(container.querySelector(".composer textarea")));
    await fireEvent.keyDown(window, { key: "Escape" });
    flushSync();
    expect(app.activeId).toBe(null);
    await vi.waitFor(() => expect((document.activeElement as HTMLElement | null)?.dataset.chat).toBe("b"));
  });

  it("shows a group one is no longer in without a composer, and deletes it after a second yes", async () => {
    const app = signedIn();
    app.chats = [chat("a", "Team", day, { isGroup: true, left: true }), chat("b", "Zoë", day)];
    await app.openChat("a");
    const { container } = render(App, { app });
    expect(container.querySelector(".composer")).toBeNull();
    expect(container.querySelector(".left-note")?.textContent).toContain("You're no longer in this group.");

    await fireEvent.click(screen.getByRole("button", { name: "Delete chat" }));
    // The question has the keyboard, and gives it back when cancelled.
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Cancel" })));
    await fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Delete chat" })));
    expect(backend.deleteChat).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByRole("button", { name: "Delete chat" }));
    await fireEvent.click(screen.getByRole("button", { name: "Delete" }));
    await vi.waitFor(() => expect(app.activeId).toBeNull());
    expect(backend.deleteChat).toHaveBeenCalledWith("a");
    expect(app.chats.map((c) => c.id)).toEqual(["b"]);
    expect(container.querySelector(".chat-view")).toBeNull();
    // The keyboard is not left on the page: the filter has it.
    await vi.waitFor(() => expect(document.activeElement).toBe(container.querySelector("input.filter")));
  });

  it("after leaving a group, gives the keyboard to the chat's Delete button", async () => {
    const app = signedIn();
    app.chats = [chat("a", "Team", day, { isGroup: true, members: [ann] }), chat("b", "Zoë", day)];
    await app.openChat("a");
    app.panel = "info";
    // The engine's list, before its answer, has the group left.
    vi.mocked(backend.leaveGroup).mockImplementationOnce(async () => {
      app.chats = [chat("a", "Team", day, { isGroup: true, left: true }), chat("b", "Zoë", day)];
    });
    render(App, { app });
    await fireEvent.click(screen.getByRole("button", { name: "Leave group" }));
    await fireEvent.click(screen.getByRole("button", { name: "Leave" }));
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Delete chat" })));
    expect(backend.leaveGroup).toHaveBeenCalledWith("a");
  });

  it("after leaving a group, gives the keyboard to Delete also when the list says so after the answer", async () => {
    const app = signedIn();
    app.chats = [chat("a", "Team", day, { isGroup: true, members: [ann] }), chat("b", "Zoë", day)];
    await app.openChat("a");
    app.panel = "info";
    const { container } = render(App, { app });
    await fireEvent.click(screen.getByRole("button", { name: "Leave group" }));
    await fireEvent.click(screen.getByRole("button", { name: "Leave" }));
    // Answered: the composer has the keyboard for now.
    await vi.waitFor(() => expect(document.activeElement).toBe(container.querySelector(".composer textarea")));
    app.handle({ type: "chats", chats: [chat("a", "Team", day, { isGroup: true, left: true }), chat("b", "Zoë", day)], unreadTotal: 0, version: 9 });
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Delete chat" })));
  });

  it("goes from the filter down into the chat list", async () => {
    const app = signedIn();
    const { container } = render(App, { app });
    const filter = container.querySelector<HTMLInputElement>("input.filter")!;
    filter.focus();
    await fireEvent.keyDown(filter, { key: "ArrowDown" });
    expect(document.activeElement).toBe(container.querySelector("ul.chats button.chat"));
  });

  it("Escape in the filter clears it first, and closes the open chat only then", async () => {
    const app = signedIn();
    await app.openChat("b");
    const { container } = render(App, { app });
    const filter = container.querySelector<HTMLInputElement>("input.filter")!;
    filter.focus();
    await fireEvent.input(filter, { target: { value: "zo" } });
    expect(container.querySelectorAll("ul.chats button.chat").length).toBe(1);
    await fireEvent.keyDown(filter, { key: "Escape" });
    expect(filter.value).toBe("");
    expect(app.activeId).toBe("b");
    expect(container.querySelectorAll("ul.chats button.chat").length).toBe(2);
    await fireEvent.keyDown(filter, { key: "Escape" });
    flushSync();
    expect(app.activeId).toBe(null);
  });

  it("gives the keyboard back when a panel's back button closes it, as Escape does", async () => {
    const app = signedIn();
    await app.openChat("b");
    app.panel = "search";
    const { container } = render(App, { app });
    const back = container.querySelector<HTMLButtonElement>(".side button.back")!;
    back.focus();
    await fireEvent.click(back);
    expect(app.panel).toBe(null);
    await vi.waitFor(() => expect(document.activeElement).toBe(container.querySelector(".composer textarea")));
  });

  it("after Escape closes a panel with no chat open, the filter has the keyboard", async () => {
    const app = signedIn();
    app.panel = "newGroup";
    const { container } = render(App, { app });
    await fireEvent.keyDown(window, { key: "Escape" });
    await vi.waitFor(() => expect(document.activeElement).toBe(container.querySelector("input.filter")));
  });
  it("asks before a logout that would delete messages not sent yet, and Cancel keeps them", async () => {
    const app = signedIn();
    render(App, { app });
    vi.mocked(backend.unsent).mockResolvedValue(2);
    await fireEvent.click(screen.getByRole("button", { name: "Log out" }));
    const question = await screen.findByRole("alertdialog");
    expect(question.textContent).toContain("2 messages have not been sent yet");
    await vi.waitFor(() => expect(document.activeElement?.id).toBe("logout-no"));
    await fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("alertdialog")).toBeNull();
    expect(backend.logout).not.toHaveBeenCalled();
    expect(document.activeElement?.id).toBe("logout");

    // Escape says no too, and leaves the open chat open.
    await app.openChat("b");
    await fireEvent.click(screen.getByRole("button", { name: "Log out" }));
    await vi.waitFor(() => expect(document.activeElement?.id).toBe("logout-no"));
    await fireEvent.keyDown(document.activeElement!, { key: "Escape" });
    expect(screen.queryByRole("alertdialog")).toBeNull();
    expect(app.activeId).toBe("b");
    expect(backend.logout).not.toHaveBeenCalled();

    await fireEvent.click(screen.getByRole("button", { name: "Log out" }));
    await fireEvent.click(await screen.findByText("Log out", { selector: "#logout-yes" }));
    await vi.waitFor(() => expect(backend.logout).toHaveBeenCalledTimes(1));
  });

  it("logs out at once when nothing waits to be sent", async () => {
    const app = signedIn();
    render(App, { app });
    vi.mocked(backend.unsent).mockResolvedValue(0);
    vi.mocked(backend.logout).mockClear();
    await fireEvent.click(screen.getByRole("button", { name: "Log out" }));
    await vi.waitFor(() => expect(backend.logout).toHaveBeenCalledTimes(1));
    expect(screen.queryByRole("alertdialog")).toBeNull();
  });
  it("keeps the chat filter while a panel is open in place of the side bar", async () => {
    const app = signedIn();
    const { container } = render(App, { app });
    const filter = () => container.querySelector<HTMLInputElement>("input.filter");
    await fireEvent.input(filter()!, { target: { value: "zo" } });
    expect(container.querySelectorAll("ul.chats .chat").length).toBe(1);
    app.panel = "search";
    flushSync();
    expect(filter()).toBeNull();
    app.panel = null;
    flushSync();
    expect(filter()!.value).toBe("zo");
    expect(container.querySelectorAll("ul.chats .chat").length).toBe(1);
  });
});
