import { fireEvent, render, screen } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import { ann, bob, chat, message } from "../lib/fixtures";
import ChatList from "./ChatList.svelte";

const chats = [
  chat("c-bob", "Bob", "2026-01-01T10:00:00Z", { lastMessage: message(3, bob, "see you", "2026-01-01T10:00:00Z"), unread: 2 }),
  chat("c-team", "Team", "2026-01-02T10:00:00Z", { isGroup: true, members: [ann, bob] }),
];

function names(container: HTMLElement): string[] {
  return Array.from(container.querySelectorAll(".chat .name")).map((n) => n.textContent ?? "");
}

describe("ChatList", () => {
  it("shows the newest activity first with preview and unread badge", () => {
    const { container } = render(ChatList, { chats, filter: "", activeId: null, onopen: () => {} });
    expect(names(container)).toEqual(["Team", "Bob"]);
    expect(screen.getByLabelText("2 unread").textContent).toBe("2");
    expect(container.querySelector('[data-chat="c-bob"] .preview')?.textContent).toBe("see you");
    expect(container.querySelector('[data-chat="c-team"] .preview')?.textContent).toBe("2 members");
  });

  it("says why there are no chats when they could not be read", () => {
    render(ChatList, { chats: [], error: "the cache is busy", filter: "", activeId: null, onopen: () => {} });
    expect(screen.getByRole("alert").textContent).toBe("The chats could not be read: the cache is busy");
  });

  it("says who is typing in place of the last message", () => {
    const typing = { "c-bob": ["Bob"], "c-team": ["Bob"] };
    const { container } = render(ChatList, { chats, filter: "", activeId: null, typing, onopen: () => {} });
    expect(container.querySelector('[data-chat="c-bob"] .preview')?.textContent).toBe("typing…");
    expect(container.querySelector('[data-chat="c-team"] .preview')?.textContent).toBe("Bob is typing…");
    expect(container.querySelector('[data-chat="c-team"] .preview bdi')?.textContent).toBe("Bob");
  });

  it("sets the sender's name apart in a group's preview, and lets the text give the line its direction", () => {
    const team = chat("c-team", "Team", "2026-01-02T10:00:00Z", {
      isGroup: true, members: [ann, bob], lastMessage: message(4, { ...bob, name: "דני" }, "at 10", "2026-01-02T10:00:00Z"),
    });
    const { container } = render(ChatList, { chats: [team], filter: "", activeId: null, onopen: () => {} });
    const preview = container.querySelector('[data-chat="c-team"] .preview')!;
    expect(preview.textContent).toBe("דני: at 10");
    expect(Array.from(preview.querySelectorAll("bdi")).map((bdi) => bdi.textContent)).toEqual(["דני"]);
    expect(preview.getAttribute("dir")).toBe("auto");
  });

  it("shows a draft in place of the last message, but not the open chat's, and typing first", () => {
    const draftOf = (id: string) => ({ "c-bob": "half a thought", "c-team": "for the team" })[id] ?? "";
    const { container } = render(ChatList, { chats, filter: "", activeId: "c-team", draftOf, onopen: () => {} });
    expect(container.querySelector('[data-chat="c-bob"] .preview')?.textContent).toBe("Draft: half a thought");
    expect(container.querySelector('[data-chat="c-team"] .preview')?.textContent).toBe("2 members");
    const typing = { "c-bob": ["Bob"] };
    const again = render(ChatList, { chats, filter: "", activeId: null, typing, draftOf, onopen: () => {} });
    expect(again.container.querySelector('[data-chat="c-bob"] .preview')?.textContent).toBe("typing…");
  });

  it("marks a chat whose messages could not all be loaded, and only that one", () => {
    const behind = [chats[0], { ...chats[1], behind: true }];
    const { container } = render(ChatList, { chats: behind, filter: "", activeId: null, onopen: () => {} });
    expect(container.querySelector('[data-chat="c-team"] .behind-mark')?.getAttribute("aria-label")).toBe("Some messages could not be loaded yet");
    expect(container.querySelector('[data-chat="c-bob"] .behind-mark')).toBeNull();
    expect(container.querySelector('[data-chat="c-team"] .name')?.textContent).toContain("Team");
  });

  it("narrows to the filter and says when nothing matches", async () => {
    const { container, rerender } = render(ChatList, { chats, filter: "tea", activeId: null, onopen: () => {} });
    expect(names(container)).toEqual(["Team"]);
    await rerender({ chats, filter: "xyz", activeId: null, onopen: () => {} });
    expect(screen.getByText("No chat matches")).toBeTruthy();
  });

  it("opens a chat on click and marks the open one", async () => {
    const onopen = vi.fn();
    const { container } = render(ChatList, { chats, filter: "", activeId: "c-team", onopen });
    await fireEvent.click(container.querySelector('[data-chat="c-bob"]')!);
    expect(onopen).toHaveBeenCalledWith("c-bob");
    expect(container.querySelector('[aria-current="true"]')?.getAttribute("data-chat")).toBe("c-team");
  });

  it("keeps the keyboard on a row that moves when the list is sorted again", async () => {
    const { container, rerender } = render(ChatList, { chats, filter: "", activeId: null, onopen: () => {} });
    const row = (id: string) => container.querySelector<HTMLButtonElement>(`[data-chat="${id}"]`)!;
    const newer = [{ ...chats[0], updatedAt: "2026-01-03T10:00:00Z", lastMessage: message(4, bob, "news", "2026-01-03T10:00:00Z") }, chats[1]];
    // Which row the list moves is its own affair: each in turn has the keyboard.
    for (const focused of ["c-team", "c-bob"]) {
      await rerender({ chats, filter: "", activeId: null, onopen: () => {} });
      row(focused).focus();
      await rerender({ chats: newer, filter: "", activeId: null, onopen: () => {} });
      expect(names(container)).toEqual(["Bob", "Team"]);
      expect((document.activeElement as HTMLElement | null)?.dataset.chat).toBe(focused);
    }
  });

  it("moves focus with the arrow keys", async () => {
    const { container } = render(ChatList, { chats, filter: "", activeId: null, onopen: () => {} });
    const [first, second] = Array.from(container.querySelectorAll<HTMLButtonElement>("button.chat"));
    first.focus();
    await fireEvent.keyDown(first, { key: "ArrowDown" });
    expect(document.activeElement).toBe(second);
    await fireEvent.keyDown(second, { key: "ArrowUp" });
    expect(document.activeElement).toBe(first);
  });
});
