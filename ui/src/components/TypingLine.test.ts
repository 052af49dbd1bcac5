import { render } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import TypingLine from "./TypingLine.svelte";

describe("TypingLine", () => {
  it("says who is typing, and nothing when nobody is", async () => {
    const { container, rerender } = render(TypingLine, { names: ["Alice"] });
    const line = container.querySelector(".typing")!;
    expect(line.textContent).toBe("Alice is typing…");
    await rerender({ names: ["Alice", "Bob"] });
    expect(line.textContent).toBe("Alice and Bob are typing…");
    expect(Array.from(line.querySelectorAll("bdi")).map((bdi) => bdi.textContent)).toEqual(["Alice", "Bob"]);
    await rerender({ names: [] });
    expect(line.textContent).toBe("");
  });
});
