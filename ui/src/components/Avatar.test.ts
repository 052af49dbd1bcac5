import { fireEvent, render } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import Avatar from "./Avatar.svelte";

describe("Avatar", () => {
  it("shows initials for a picture that fails to load, and tries the next picture it is given", async () => {
    const { container, rerender } = render(Avatar, { name: "Bob Stone", pic: "/api/pic/a.png" });
    await fireEvent.error(container.querySelector("img")!);
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector(".initials")!.textContent).toBe("BS");
    await rerender({ name: "Carol", pic: "/api/pic/b.png" });
    expect(container.querySelector("img")!.getAttribute("src")).toContain("/api/pic/b.png");
  });
});
