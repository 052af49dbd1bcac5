import { describe, expect, it } from "vitest";
import { ann, bob, message, zoe } from "./fixtures";
import { firstUnread, merge, messageKey, oldestSeq, rows, withoutDiscarded } from "./history";

const day1 = "2026-03-02T10:00:00";
const day2 = "2026-03-03T10:00:00";

describe("merge", () => {
  it("turns a pending message into the sent one without a duplicate", () => {
    const pending = message(null, ann, "hello", day1, { clientId: "k1" });
    const sent = message(5, ann, "hello", day1, { clientId: "k1" });
    const merged = merge([message(4, bob, "hi", day1), pending], [sent]);
    expect(merged.map((m) => m.seq)).toEqual([4, 5]);
    expect(merged[1].status).toBe("sent");
  });

  it("keeps a sent message sent when its pending copy arrives late", () => {
    const pending = message(null, ann, "hello", day1, { clientId: "k1" });
    const sent = message(5, ann, "hello", day1, { clientId: "k1" });
    const merged = merge(merge([], [sent]), [pending]);
    expect(merged).toEqual([sent]);
  });

  it("keeps a failed message failed when a page read before the refusal arrives late", () => {
    const failed = message(null, ann, "hello", day1, { clientId: "k1", status: "failed", error: "too long" });
    const pending = message(null, ann, "hello", day1, { clientId: "k1" });
    const merged = merge([failed], [pending]);
    expect(merged.map((m) => [m.status, m.error])).toEqual([["failed", "too long"]]);
  });

  it("puts an older page before what is loaded and keeps pending messages last", () => {
    const loaded = [message(51, bob, "x", day2), message(null, ann, "later", day2, { clientId: "k" })];
    const older = [message(49, bob, "a", day1), message(50, bob, "b", day1)];
    expect(merge(loaded, older).map((m) => m.seq)).toEqual([49, 50, 51, null]);
  });

  it("moves a copy stored again under a later seq to its new place", () => {
    const delivered = message(3, ann, "hello", day1, { clientId: "k1" });
    const later = message(4, bob, "hi", day1);
    const stored = { ...message(100_005, ann, "hello", day1, { clientId: "k1" }), id: "again" };
    const merged = merge([delivered, later], [stored]);
    expect(merged.map((m) => [m.id, m.seq])).toEqual([["m4", 4], ["again", 100_005]]);
  });

  it("keeps two senders' messages that share a clientId (each sender names its own)", () => {
    const fromAnn = message(1, ann, "one", day1, { clientId: "1" });
    const fromBob = message(2, bob, "two", day1, { clientId: "1" });
    const merged = merge([fromAnn], [fromBob]);
    expect(merged.map((m) => m.content)).toEqual(["one", "two"]);
    expect(new Set(merged.map(messageKey)).size).toBe(2);
  });

  it("ignores a message it already has", () => {
    const m = message(1, bob, "once", day1);
    expect(merge([m], [m])).toHaveLength(1);
  });
});

describe("withoutDiscarded", () => {
  it("leaves out a discarded message unless the server stored it", () => {
    const failed = message(null, ann, "refused", day1, { clientId: "k1", status: "failed", error: "too long" });
    const pending = message(null, ann, "waiting", day1, { clientId: "k2" });
    const stored = message(7, ann, "left before the discard", day1, { clientId: "k3" });
    const other = message(8, bob, "hi", day1);
    const kept = withoutDiscarded([failed, pending, stored, other], new Set(["k1", "k2", "k3"]));
    expect(kept.map((m) => m.content)).toEqual(["left before the discard", "hi"]);
  });
});

describe("rows", () => {
  const messages = [
    message(1, bob, "one", day1), message(2, bob, "two", day1), message(3, zoe, "three", day1),
    message(4, zoe, "four", day2), message(5, ann, "mine", day2), message(6, zoe, "six", day2),
  ];

  it("separates days and names a run's sender once in groups", () => {
    const shown = rows(messages, { isGroup: true, unreadFrom: null, unreadCount: 0 });
    expect(shown.map((r) => r.day !== null)).toEqual([true, false, false, true, false, false]);
    expect(shown.map((r) => r.showSender)).toEqual([true, false, true, true, false, true]);
  });

  it("names nobody in a 1:1 chat", () => {
    expect(rows(messages, { isGroup: false, unreadFrom: null, unreadCount: 0 }).some((r) => r.showSender)).toBe(false);
  });

  it("puts the new-messages marker above the first unread message", () => {
    const from = firstUnread(messages, 2);
    expect(from).toBe(messageKey(messages[3]));
    const shown = rows(messages, { isGroup: true, unreadFrom: from, unreadCount: 2 });
    expect(shown.filter((r) => r.unread !== null).map((r) => [r.message.seq, r.unread])).toEqual([[4, 2]]);
  });

  it("with more unread than loaded, puts the marker on the oldest loaded from others", () => {
    const from = firstUnread(messages, 80);
    const oldestFromOthers = messages.find((m) => !m.mine);
    expect(oldestFromOthers).toBeDefined();
    expect(from).toBe(messageKey(oldestFromOthers!));
    const shown = rows(messages, { isGroup: true, unreadFrom: from, unreadCount: 80 });
    expect(shown.filter((r) => r.unread !== null).map((r) => r.unread)).toEqual([80]);
  });

  it("has no marker when nothing is unread", () => {
    expect(firstUnread(messages, 0)).toBeNull();
  });
});

describe("oldestSeq", () => {
  it("skips pending messages", () => {
    expect(oldestSeq([message(null, ann, "p", day1), message(7, bob, "x", day1)])).toBe(7);
    expect(oldestSeq([])).toBeNull();
  });
});
