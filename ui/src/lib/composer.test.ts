import { describe, expect, it } from "vitest";
import { checkMessage, keyAction, showCounter } from "./composer";

describe("keyAction", () => {
  it("sends on Enter only", () => {
    expect(keyAction({ key: "Enter", shiftKey: false, isComposing: false })).toBe("send");
    expect(keyAction({ key: "Enter", shiftKey: true, isComposing: false })).toBe("none");
    expect(keyAction({ key: "Enter", shiftKey: false, isComposing: true })).toBe("none");
    // WebKit on macOS: an input method's Enter, not marked as composing.
    expect(keyAction({ key: "Enter", shiftKey: false, isComposing: false, keyCode: 229 })).toBe("none");
    expect(keyAction({ key: "Enter", shiftKey: false, isComposing: false, keyCode: 13 })).toBe("send");
    expect(keyAction({ key: "a", shiftKey: false, isComposing: false })).toBe("none");
  });
});

describe("checkMessage", () => {
  it("refuses blank text and text over the limit, counting emoji as the server does", () => {
    expect(checkMessage("  \n", 10)).toMatchObject({ ok: false, reason: "empty" });
    expect(checkMessage("👋".repeat(10), 10)).toEqual({ ok: true, count: 10 });
    expect(checkMessage("👋".repeat(11), 10)).toMatchObject({ ok: false, reason: "tooLong", message: "Too long: 11 of at most 10 characters" });
    // Spaces and blank lines around the text are not sent, so not counted.
    expect(checkMessage(`  ${"a".repeat(10)}\n\n`, 10)).toEqual({ ok: true, count: 10 });
  });

  it("shows the counter near the limit", () => {
    expect(showCounter(89, 100)).toBe(false);
    expect(showCounter(90, 100)).toBe(true);
  });
});
