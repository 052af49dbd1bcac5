import { fireEvent, render, screen } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import Confirm from "./Confirm.svelte";

describe("Confirm", () => {
  it("takes the keyboard on its Cancel, and answers yes, no, or no on Escape without passing it on", async () => {
    const onanswer = vi.fn();
    const windowEscape = vi.fn();
    window.addEventListener("keydown", windowEscape);
    render(Confirm, { id: "remove", question: "Remove Bob from Team?", yes: "Remove", onanswer });
    const question = screen.getByRole("alertdialog", { name: "Remove Bob from Team?" });
    expect(question.textContent).toContain("Remove Bob from Team?");
    await vi.waitFor(() => expect(document.activeElement?.id).toBe("remove-no"));

    await fireEvent.keyDown(document.activeElement!, { key: "Escape" });
    expect(onanswer).toHaveBeenLastCalledWith(false);
    expect(windowEscape).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByRole("button", { name: "Remove" }));
    expect(onanswer).toHaveBeenLastCalledWith(true);
    await fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(onanswer).toHaveBeenLastCalledWith(false);
    window.removeEventListener("keydown", windowEscape);
  });
});
