import { fireEvent, render, screen } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import { ann, bob, zoe } from "../lib/fixtures";
import NewGroup from "./NewGroup.svelte";

// The panel searches through the backend; here it answers Bob and Zoë.
const searchUsers = vi.hoisted(() => vi.fn(async (_q: string) => [] as unknown[]));
vi.mock("../lib/backend", async (original) => ({
  ...(await original<typeof import("../lib/backend")>()),
  backend: { searchUsers },
}));

const limits = { contentMaxChars: 4096, nameMaxChars: 64, passwordMinChars: 8, chatNameMaxChars: 64 };

function panel() {
  searchUsers.mockImplementation(async () => [bob, zoe]);
  const oncreate = vi.fn(async (_name: string, _members: string[]) => {});
  render(NewGroup, { me: ann, limits, oncreate, onclose: () => {} });
  return oncreate;
}

describe("NewGroup", () => {
  it("adds the people picked, and creates the group only when asked", async () => {
    const oncreate = panel();
    await fireEvent.input(screen.getByLabelText("Group name"), { target: { value: "Team" } });
    const search = screen.getByLabelText("Search users");
    await fireEvent.input(search, { target: { value: "bo" } });
    await vi.waitFor(() => expect(screen.getByLabelText("Add Bob")).toBeTruthy());
    await fireEvent.click(screen.getByLabelText("Add Bob"));
    expect(oncreate).not.toHaveBeenCalled();
    await fireEvent.input(search, { target: { value: "zo" } });
    await vi.waitFor(() => expect(screen.getByLabelText("Add Zoë")).toBeTruthy());
    await fireEvent.click(screen.getByLabelText("Add Zoë"));
    expect(oncreate).not.toHaveBeenCalled();
    expect(screen.getAllByRole("listitem").map((li) => li.textContent?.replace("×", "").trim())).toContain("Bob");
    await fireEvent.click(screen.getByText("Create group"));
    expect(oncreate).toHaveBeenCalledWith("Team", [bob.id, zoe.id]);
  });

  it("gives the keyboard to the next chip when one is removed, then to the search", async () => {
    panel();
    const search = screen.getByLabelText("Search users");
    for (const [query, name] of [["bo", "Bob"], ["zo", "Zoë"]]) {
      await fireEvent.input(search, { target: { value: query } });
      await vi.waitFor(() => expect(screen.getByLabelText(`Add ${name}`)).toBeTruthy());
      await fireEvent.click(screen.getByLabelText(`Add ${name}`));
    }
    await fireEvent.click(screen.getByLabelText("Remove Bob"));
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Remove Zoë")));
    await fireEvent.click(screen.getByLabelText("Remove Zoë"));
    await vi.waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText("Search users")));
  });

  it("takes Enter in the search box as a search, not as creating the group", async () => {
    const oncreate = panel();
    await fireEvent.input(screen.getByLabelText("Group name"), { target: { value: "Team" } });
    const search = screen.getByLabelText("Search users");
    // With a name and one member, a submitted form would create the group.
    await fireEvent.input(search, { target: { value: "bo" } });
    await vi.waitFor(() => expect(screen.getByLabelText("Add Bob")).toBeTruthy());
    await fireEvent.click(screen.getByLabelText("Add Bob"));
    await fireEvent.input(search, { target: { value: "zo" } });
    searchUsers.mockClear();
    // A browser submits the form on an Enter it is not told to leave
    // alone; jsdom does not, so the test does what the browser would.
    const notCancelled = await fireEvent.keyDown(search, { key: "Enter" });
    if (notCancelled) search.closest("form")?.requestSubmit();
    expect(searchUsers).toHaveBeenCalledWith("zo");
    await vi.waitFor(() => expect(searchUsers).toHaveBeenCalledTimes(1));
    expect(oncreate).not.toHaveBeenCalled();
  });
});
