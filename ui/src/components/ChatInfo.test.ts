import { fireEvent, render, screen } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import { ann, bob, chat, zoe } from "../lib/fixtures";
import ChatInfo from "./ChatInfo.svelte";

const limits = { contentMaxChars: 4096, nameMaxChars: 64, passwordMinChars: 8, chatNameMaxChars: 64 };
const group = chat("g", "Lunch crew", "2026-01-01T00:00:00Z", { isGroup: true, members: [ann, bob, zoe], adminId: ann.id });

function actions() {
  return { rename: vi.fn(async () => {}), add: vi.fn(async () => {}), remove: vi.fn(async () => {}), leave: vi.fn(async () => {}) };
}

describe("ChatInfo", () => {
  it("gives the admin rename, add and remove, and marks the admin", async () => {
    const acts = actions();
    const { container } = render(ChatInfo, { chat: group, me: ann, limits, actions: acts, onclose: () => {} });
    expect(container.querySelector(`[data-member="${ann.id}"] .tag`)?.textContent).toBe("admin");
    expect(screen.getByLabelText("Group name")).toBeTruthy();
    expect(screen.getByText("Add a member")).toBeTruthy();
    await fireEvent.click(screen.getByLabelText("Remove Bob"));
    // Asked again first: "Cancel" leaves Bob in.
    expect(screen.getByRole("alertdialog").textContent).toContain("Remove Bob from Lunch crew?");
    expect(document.activeElement?.textContent).toBe("Cancel");
    await fireEvent.click(screen.getByText("Cancel"));
    expect(acts.remove).not.toHaveBeenCalled();
    // The keyboard goes back to the button that asked.
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Remove Bob")));
    await fireEvent.click(screen.getByLabelText("Remove Bob"));
    await fireEvent.click(screen.getByRole("button", { name: "Remove" }));
    expect(acts.remove).toHaveBeenCalledWith(bob.id);
    expect(screen.queryByRole("alertdialog")).toBeNull();
    // Here Bob stays listed (the chat given is not updated): back to his button.
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Remove Bob")));
    expect(screen.queryByLabelText("Remove Ann Lee")).toBeNull();
  });

  it("gives the keyboard to the back button when the member removed takes their button along", async () => {
    const acts = actions();
    let done = () => {};
    acts.remove.mockImplementationOnce(() => new Promise<void>((resolve) => { done = resolve; }));
    const { rerender } = render(ChatInfo, { chat: group, me: ann, limits, actions: acts, onclose: () => {} });
    await fireEvent.click(screen.getByLabelText("Remove Bob"));
    await fireEvent.click(screen.getByRole("button", { name: "Remove" }));
    await rerender({ chat: { ...group, members: [ann, zoe] } });
    done();
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Close")));
  });

  it("shows other members no admin controls, only leaving", async () => {
    const acts = actions();
    const { container } = render(ChatInfo, { chat: group, me: bob, limits, actions: acts, onclose: () => {} });
    expect(container.querySelectorAll(".remove")).toHaveLength(0);
    expect(screen.queryByLabelText("Group name")).toBeNull();
    expect(screen.queryByText("Add a member")).toBeNull();
    await fireEvent.click(screen.getByText("Leave group"));
    expect(acts.leave).not.toHaveBeenCalled();
    expect(screen.getByRole("alertdialog").textContent).toContain("Leave Lunch crew?");
    // Cancelled: the keyboard goes back to "Leave group", drawn anew.
    await fireEvent.click(screen.getByText("Cancel"));
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByText("Leave group")));
    await fireEvent.click(screen.getByText("Leave group"));
    await fireEvent.click(screen.getByRole("button", { name: "Leave" }));
    expect(acts.leave).toHaveBeenCalled();
  });

  it("gives a group one is no longer in neither admin controls nor leaving", () => {
    const left = { ...group, members: [bob, zoe], left: true };
    const { container } = render(ChatInfo, { chat: left, me: ann, limits, actions: actions(), onclose: () => {} });
    expect(container.querySelectorAll(".remove")).toHaveLength(0);
    expect(screen.queryByLabelText("Group name")).toBeNull();
    expect(screen.queryByText("Add a member")).toBeNull();
    expect(screen.queryByText("Leave group")).toBeNull();
  });

  it("shows the server's refusal", async () => {
    const acts = actions();
    acts.remove.mockRejectedValueOnce({ error: "only the group admin can do that" });
    render(ChatInfo, { chat: group, me: ann, limits, actions: acts, onclose: () => {} });
    await fireEvent.click(screen.getByLabelText("Remove Bob"));
    await fireEvent.click(screen.getByRole("button", { name: "Remove" }));
    await vi.waitFor(() => expect(screen.getByRole("alert").textContent).toBe("only the group admin can do that"));
  });

  it("counts a new name in characters, as the server does, and says when it is too long", async () => {
    const acts = actions();
    render(ChatInfo, { chat: group, me: ann, limits, actions: acts, onclose: () => {} });
    const name = screen.getByLabelText("Group name") as HTMLInputElement;
    expect(name.hasAttribute("maxlength")).toBe(false);
    await fireEvent.input(name, { target: { value: "x".repeat(limits.chatNameMaxChars + 1) } });
    await fireEvent.click(screen.getByText("Rename"));
    expect(screen.getByRole("alert").textContent).toBe(`A group name has at most ${limits.chatNameMaxChars} characters`);
    expect(acts.rename).not.toHaveBeenCalled();
    await fireEvent.input(name, { target: { value: "🍜".repeat(limits.chatNameMaxChars) + " " } });
    await fireEvent.click(screen.getByText("Rename"));
    expect(acts.rename).toHaveBeenCalledWith("🍜".repeat(limits.chatNameMaxChars));
  });

  it("shows the other person's card in a 1:1 chat", () => {
    render(ChatInfo, { chat: chat("d", "Bob", "2026-01-01T00:00:00Z"), me: ann, limits, actions: actions(), onclose: () => {} });
    expect(screen.getByText("bob@example.com")).toBeTruthy();
    expect(screen.queryByText("Leave group")).toBeNull();
  });
});

describe("ChatInfo, renaming", () => {
  it("keeps what the admin types while the chat updates, and follows a new name", async () => {
    const props = { chat: group, me: ann, limits, actions: actions(), onclose: () => {} };
    const { rerender } = render(ChatInfo, props);
    const box = screen.getByLabelText("Group name") as HTMLInputElement;
    await fireEvent.input(box, { target: { value: "Lunch cr" } });
    await rerender({ ...props, chat: { ...group, unread: 3 } });
    expect(box.value).toBe("Lunch cr");
    await rerender({ ...props, chat: { ...group, name: "Dinner crew" } });
    expect(box.value).toBe("Dinner crew");
  });
});
