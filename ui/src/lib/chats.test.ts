import { describe, expect, it } from "vitest";
import { isAdmin, previewSegments, visibleChats } from "./chats";
import { plain } from "./text";
import { ann, bob, chat, message, zoe } from "./fixtures";

describe("visibleChats", () => {
  const old = chat("c-old", "Bob", "2026-01-01T10:00:00Z");
  const recent = chat("c-new", "Team", "2026-01-01T09:00:00Z", {
    isGroup: true, members: [ann, bob, zoe],
    lastMessage: message(1, bob, "hi", "2026-01-02T08:00:00Z"),
  });

  it("puts the chat with the newest activity first, counting its last message", () => {
    expect(visibleChats([old, recent], "").map((c) => c.id)).toEqual(["c-new", "c-old"]);
  });

  it("orders by time, not by how many digits of a second the server wrote", () => {
    const onTheSecond = chat("c-a", "A", "2026-01-01T10:00:05Z");
    const later = chat("c-b", "B", "2026-01-01T10:00:05.300Z");
    expect(visibleChats([onTheSecond, later], "").map((c) => c.id)).toEqual(["c-b", "c-a"]);
  });

  it("matches the filter against names and members, ignoring case and accents", () => {
    expect(visibleChats([old, recent], "team").map((c) => c.id)).toEqual(["c-new"]);
    expect(visibleChats([old, recent], "zoe").map((c) => c.id)).toEqual(["c-new"]);
    expect(visibleChats([old, recent], "nobody")).toEqual([]);
  });

  it("does not match the user's own name, which every chat has among its members", () => {
    expect(visibleChats([old, recent], "ann").map((c) => c.id)).toEqual(["c-new", "c-old"]);
    expect(visibleChats([old, recent], "ann", ann.id)).toEqual([]);
    expect(visibleChats([old, recent], "bob", ann.id).map((c) => c.id)).toEqual(["c-new", "c-old"]);
  });

  it("does not reorder the array it was given", () => {
    const input = [old, recent];
    visibleChats(input, "");
    expect(input[0]).toBe(old);
  });
});

describe("preview", () => {
  it("names the sender in groups and says You for one's own", () => {
    const group = chat("g", "Team", "2026-01-01T00:00:00Z", { isGroup: true, lastMessage: message(1, bob, "a\nb", "2026-01-01T00:00:00Z") });
    expect(plain(previewSegments(group))).toBe("Bob: a b");
    expect(plain(previewSegments({ ...group, lastMessage: message(2, ann, "mine", "2026-01-01T00:00:00Z") }))).toBe("You: mine");
    expect(plain(previewSegments({ ...group, isGroup: false }))).toBe("a b");
    const unsent = { ...message(3, ann, "later", "2026-01-01T00:00:00Z"), seq: null };
    expect(plain(previewSegments({ ...group, lastMessage: { ...unsent, status: "pending" } }))).toBe("🕓 You: later");
    expect(plain(previewSegments({ ...group, lastMessage: { ...unsent, status: "failed", error: "no" } }))).toBe("Not sent: later");
  });
});

describe("isAdmin", () => {
  it("holds only for the admin of a group", () => {
    const group = chat("g", "Team", "2026-01-01T00:00:00Z", { isGroup: true, adminId: ann.id });
    expect(isAdmin(group, ann)).toBe(true);
    expect(isAdmin(group, bob)).toBe(false);
    expect(isAdmin({ ...group, isGroup: false }, ann)).toBe(false);
  });
});
