import { describe, expect, it } from "vitest";
import { initials, typingText } from "./text";

describe("typingText", () => {
  it("names one, two, or two and the rest", () => {
    expect(typingText([])).toBe("");
    expect(typingText(["Ann"])).toBe("Ann is typing…");
    expect(typingText(["Ann", "Bob"])).toBe("Ann and Bob are typing…");
    expect(typingText(["Ann", "Bob", "Cid"])).toBe("Ann, Bob and 1 other are typing…");
    expect(typingText(["Ann", "Bob", "Cid", "Dee"])).toBe("Ann, Bob and 2 others are typing…");
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
