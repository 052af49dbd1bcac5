import { fireEvent, render, screen } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import Composer from "./Composer.svelte";

function setup(maxChars = 20, sent = true) {
  const onsend = vi.fn(async (_text: string) => sent);
  const ontyping = vi.fn();
  render(Composer, { maxChars, onsend, ontyping });
  const box = screen.getByLabelText("Message") as HTMLTextAreaElement;
  return { onsend, ontyping, box };
}

async function type(box: HTMLTextAreaElement, text: string) {
  await fireEvent.input(box, { target: { value: text } });
}

describe("Composer", () => {
  it("sends on Enter, clears the box and says typing stopped", async () => {
    const { onsend, ontyping, box } = setup();
    await type(box, "hello 👋");
    expect(ontyping).toHaveBeenLastCalledWith(true);
    await fireEvent.keyDown(box, { key: "Enter" });
    expect(onsend).toHaveBeenCalledWith("hello 👋");
    expect(box.value).toBe("");
    expect(ontyping).toHaveBeenLastCalledWith(false);
  });

  it("shows a draft given back while the box is empty, and never over what is being written", async () => {
    const props = { maxChars: 20, onsend: vi.fn(async () => true), ontyping: vi.fn(), draft: "" };
    const { rerender } = render(Composer, props);
    const box = screen.getByLabelText("Message") as HTMLTextAreaElement;
    await rerender({ ...props, draft: "given back" });
    expect(box.value).toBe("given back");
    await type(box, "mine");
    await rerender({ ...props, draft: "another" });
    expect(box.value).toBe("mine");
  });

  it("keeps Shift+Enter in the text", async () => {
    const { onsend, box } = setup();
    await type(box, "line one");
    await fireEvent.keyDown(box, { key: "Enter", shiftKey: true });
    expect(onsend).not.toHaveBeenCalled();
  });

  it("refuses blank text", async () => {
    const { onsend, box } = setup();
    await type(box, "   ");
    await fireEvent.keyDown(box, { key: "Enter" });
    expect(onsend).not.toHaveBeenCalled();
  });

  it("refuses text over the server's limit and says the limit", async () => {
    const { onsend, box } = setup(5);
    await type(box, "123456");
    await fireEvent.keyDown(box, { key: "Enter" });
    expect(onsend).not.toHaveBeenCalled();
    expect(screen.getByText("Too long: 6 of at most 5 characters")).toBeTruthy();
    expect(box.getAttribute("aria-invalid")).toBe("true");
    expect((screen.getByLabelText("Send") as HTMLButtonElement).disabled).toBe(true);
  });

  it("gives the text back when sending fails", async () => {
    const { box } = setup(20, false);
    await type(box, "try again");
    await fireEvent.keyDown(box, { key: "Enter" });
    await vi.waitFor(() => expect(box.value).toBe("try again"));
  });
});

describe("Composer, left with a draft", () => {
  it("says typing stopped when it goes", async () => {
    const ontyping = vi.fn();
    const { unmount } = render(Composer, { maxChars: 20, onsend: async () => true, ontyping });
    await fireEvent.input(screen.getByLabelText("Message"), { target: { value: "half a tho" } });
    unmount();
    expect(ontyping).toHaveBeenLastCalledWith(false);
  });
});

describe("Composer's draft", () => {
  it("starts from the chat's draft and keeps each change, until it is sent", async () => {
    const ondraft = vi.fn();
    const onsend = vi.fn(async (_text: string) => true);
    render(Composer, { maxChars: 20, onsend, ontyping: () => {}, draft: "half", ondraft });
    const box = screen.getByLabelText("Message") as HTMLTextAreaElement;
    expect(box.value).toBe("half");
    await type(box, "half done");
    expect(ondraft).toHaveBeenLastCalledWith("half done");
    await fireEvent.keyDown(box, { key: "Enter" });
    expect(onsend).toHaveBeenCalledWith("half done");
    expect(ondraft).toHaveBeenLastCalledWith("");
  });

  it("puts the text back when it could not be sent, unless something new was begun", async () => {
    const answer = { resolve: (_sent: boolean) => {} };
    const onsend = () => new Promise<boolean>((resolve) => { answer.resolve = resolve; });
    render(Composer, { maxChars: 20, onsend, ontyping: () => {} });
    const box = screen.getByLabelText("Message") as HTMLTextAreaElement;
    await type(box, "not yet");
    await fireEvent.keyDown(box, { key: "Enter" });
    answer.resolve(false);
    await vi.waitFor(() => expect(box.value).toBe("not yet"));
    await fireEvent.keyDown(box, { key: "Enter" });
    await type(box, "begun meanwhile");
    answer.resolve(false);
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(box.value).toBe("begun meanwhile");
  });
});
