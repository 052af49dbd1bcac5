import { fireEvent, render } from "@testing-library/svelte";
import { flushSync } from "svelte";
import { describe, expect, it } from "vitest";
import { retryBrokenPictures } from "../lib/pictures.svelte";
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

  it("tries a picture that failed again once the link is back, under a new URL; one that loaded keeps its own", async () => {
    const failing = render(Avatar, { name: "Bob Stone", pic: "/api/pic/a.png" });
    const loaded = render(Avatar, { name: "Carol", pic: "/api/pic/b.png" });
    const loadedSrc = loaded.container.querySelector("img")!.getAttribute("src");
    await fireEvent.error(failing.container.querySelector("img")!);
    expect(failing.container.querySelector("img")).toBeNull();
    retryBrokenPictures();
    flushSync();
    const again = failing.container.querySelector("img")!.getAttribute("src")!;
    expect(again).toContain("/api/pic/a.png?after=");
    expect(loaded.container.querySelector("img")!.getAttribute("src")).toBe(loadedSrc);
    // Failing again, it waits for the next time the link is back.
    await fireEvent.error(failing.container.querySelector("img")!);
    expect(failing.container.querySelector("img")).toBeNull();
    retryBrokenPictures();
    flushSync();
    expect(failing.container.querySelector("img")!.getAttribute("src")).not.toBe(again);
  });

  it("tries at once a picture whose failure came in after the link was back", async () => {
    const { container } = render(Avatar, { name: "Bob Stone", pic: "/api/pic/slow.png" });
    retryBrokenPictures();
    flushSync();
    await fireEvent.error(container.querySelector("img")!);
    expect(container.querySelector("img")!.getAttribute("src")).toContain("/api/pic/slow.png?after=");
  });
});
