import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { User } from "../lib/backend";
import { ann, bob, zoe } from "../lib/fixtures";
import UserSearch from "./UserSearch.svelte";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

/** Types `text` into the search box, then lets `ms` of (fake) time pass. */
async function typeThenWait(text: string, ms: number) {
  await fireEvent.input(screen.getByLabelText("Search users"), { target: { value: text } });
  await vi.advanceTimersByTimeAsync(ms);
}

describe("UserSearch", () => {
  it("asks once the typing pauses, not on every key", async () => {
    const search = vi.fn(async (_q: string): Promise<User[]> => [bob]);
    render(UserSearch, { search, onpick: () => {}, delay: 250 });
    const box = screen.getByLabelText("Search users");
    await fireEvent.input(box, { target: { value: "b" } });
    await fireEvent.input(box, { target: { value: "bo" } });
    expect(search).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(250);
    expect(search).toHaveBeenCalledTimes(1);
    expect(search).toHaveBeenCalledWith("bo");
    expect(screen.getByText("Bob")).toBeTruthy();
  });

  it("keeps the newest answer when an older one arrives late", async () => {
    const answers: Record<string, { users: User[]; after: number }> = { a: { users: [ann], after: 500 }, z: { users: [zoe], after: 10 } };
    const search = (q: string) => new Promise<User[]>((resolve) => setTimeout(() => resolve(answers[q].users), answers[q].after));
    render(UserSearch, { search, onpick: () => {}, delay: 0 });
    await typeThenWait("a", 1);
    await typeThenWait("z", 600);
    expect(screen.queryByText("Ann Lee")).toBeNull();
    expect(screen.getByText("Zoë")).toBeTruthy();
  });

  it("leaves out excluded users and hands over the one picked", async () => {
    const onpick = vi.fn();
    render(UserSearch, { search: async () => [ann, bob], onpick, exclude: [ann.id], pickLabel: "Add" });
    await typeThenWait("x", 250);
    expect(screen.queryByText("Ann Lee")).toBeNull();
    await fireEvent.click(screen.getByLabelText("Add Bob"));
    expect(onpick).toHaveBeenCalledWith(bob);
  });

  it("says so when nobody matches", async () => {
    render(UserSearch, { search: async () => [], onpick: () => {} });
    await typeThenWait("nobody", 250);
    expect(screen.getByText("Nobody found")).toBeTruthy();
  });
});

describe("UserSearch with clearOnPick", () => {
  it("empties the box for the next person", async () => {
    render(UserSearch, { search: async () => [bob], onpick: () => {}, clearOnPick: true });
    const box = screen.getByLabelText("Search users") as HTMLInputElement;
    await typeThenWait("bo", 250);
    await fireEvent.click(screen.getByLabelText("Choose Bob"));
    expect(box.value).toBe("");
    expect(screen.queryByText("Bob")).toBeNull();
  });
});

describe("UserSearch, cleared", () => {
  it("ignores an answer that arrives after the box was emptied", async () => {
    const search = (_q: string) => new Promise<User[]>((resolve) => setTimeout(() => resolve([bob]), 300));
    render(UserSearch, { search, onpick: () => {}, delay: 0 });
    await typeThenWait("bo", 1);
    await typeThenWait("", 400);
    expect(screen.queryByText("Bob")).toBeNull();
  });
});
