import { describe, expect, it, vi } from "vitest";
import { ann, message } from "./fixtures";
import { dayLabel, deliveryLabel, deliveryTooltip, fullTimeLabel, initials, linkParts, listTimeLabel, plain, timeLabel, typingSegments } from "./text";

describe("typingSegments", () => {
  it("names one, two, or two and the rest", () => {
    expect(plain(typingSegments([]))).toBe("");
    expect(plain(typingSegments(["Ann"]))).toBe("Ann is typing…");
    expect(plain(typingSegments(["Ann", "Bob"]))).toBe("Ann and Bob are typing…");
    expect(plain(typingSegments(["Ann", "Bob", "Cid"]))).toBe("Ann, Bob and 1 other are typing…");
    expect(plain(typingSegments(["Ann", "Bob", "Cid", "Dee"]))).toBe("Ann, Bob and 2 others are typing…");
  });
});

describe("initials", () => {
  it("takes the first and last word", () => {
    expect(initials("ann lee smith")).toBe("AS");
    expect(initials("Ann")).toBe("A");
    expect(initials("  ")).toBe("?");
    expect(initials("élodie")).toBe("É");
  });
});

describe("dayLabel", () => {
  const now = new Date(2026, 2, 10, 12, 0); // Tuesday 10 March 2026
  it("says Today, Yesterday, a weekday, then the date", () => {
    expect(dayLabel(new Date(2026, 2, 10, 0, 5).toISOString(), now)).toBe("Today");
    expect(dayLabel(new Date(2026, 2, 9, 23, 59).toISOString(), now)).toBe("Yesterday");
    expect(dayLabel(new Date(2026, 2, 6, 9, 0).toISOString(), now)).toBe(new Date(2026, 2, 6).toLocaleDateString([], { weekday: "long" }));
    expect(dayLabel(new Date(2026, 0, 1).toISOString(), now)).toContain("2026");
  });
});

describe("listTimeLabel", () => {
  it("says Yesterday for the day before a clock change too", () => {
    vi.stubEnv("TZ", "Europe/Berlin");
    try {
      // Clocks went forward on 29 March 2026: that day had 23 hours.
      const now = new Date(2026, 2, 30, 12, 0);
      expect(listTimeLabel(new Date(2026, 2, 29, 12, 0).toISOString(), now)).toBe("Yesterday");
      expect(dayLabel(new Date(2026, 2, 29, 12, 0).toISOString(), now)).toBe("Yesterday");
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe("timeLabel and fullTimeLabel", () => {
  it("format as the locale's own methods do, called again and again", () => {
    const at = new Date(2026, 2, 10, 14, 5);
    for (let i = 0; i < 3; i++) {
      expect(timeLabel(at.toISOString())).toBe(at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      expect(fullTimeLabel(at.toISOString())).toBe(at.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" }));
    }
    expect(fullTimeLabel(at.toISOString())).toContain("2026");
  });
});

describe("deliveryLabel and deliveryTooltip", () => {
  const at = "2026-03-04T14:05:00Z";
  it("tell a sent message's time, and where an unsent one stands", () => {
    const sent = message(1, ann, "hi", at);
    expect(deliveryLabel(sent)).toBe(timeLabel(at));
    expect(deliveryTooltip(sent)).toBe(fullTimeLabel(at));
    const sending = message(null, ann, "hi", at);
    expect(deliveryLabel(sending)).toBe("Sending…");
    expect(deliveryTooltip(sending)).toBe(fullTimeLabel(at));
    const failed = message(null, ann, "hi", at, { status: "failed", error: "you are not a member of this chat" });
    expect(deliveryLabel(failed)).toBe("Not sent: you are not a member of this chat");
  });

  it("say a message refused for now is waiting, and why in the tooltip", () => {
    const waiting = message(null, ann, "hi", at, { error: "the database is not answering: try again" });
    expect(waiting.status).toBe("pending");
    expect(deliveryLabel(waiting)).toBe("Waiting to send…");
    expect(deliveryTooltip(waiting)).toBe("the database is not answering: try again");
  });
});

describe("linkParts", () => {
  it("cuts out web links, leaving punctuation after one as text", () => {
    expect(linkParts("Menu: https://example.org/menu?day=1. See you")).toEqual([
      { text: "Menu: " },
      { text: "https://example.org/menu?day=1", url: "https://example.org/menu?day=1" },
      { text: ". See you" },
    ]);
    expect(linkParts("(http://a.example/x) and https://b.example")).toEqual([
      { text: "(" },
      { text: "http://a.example/x", url: "http://a.example/x" },
      { text: ") and " },
      { text: "https://b.example", url: "https://b.example" },
    ]);
  });

  it("keeps a bracket the link opens itself, and finds links in any case", () => {
    expect(linkParts("https://en.wikipedia.org/wiki/Tea_(drink))")).toEqual([
      { text: "https://en.wikipedia.org/wiki/Tea_(drink)", url: "https://en.wikipedia.org/wiki/Tea_(drink)" },
      { text: ")" },
    ]);
    expect(linkParts("HTTPS://Example.org/A")).toEqual([{ text: "HTTPS://Example.org/A", url: "HTTPS://Example.org/A" }]);
  });

  it("leaves text without a link, or with a broken one, as it is", () => {
    expect(linkParts("no links here")).toEqual([{ text: "no links here" }]);
    expect(linkParts("just http://. then")).toEqual([{ text: "just http://. then" }]);
    expect(linkParts("javascript:alert(1) ftp://x.example")).toEqual([{ text: "javascript:alert(1) ftp://x.example" }]);
  });
});
