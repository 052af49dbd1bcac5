import { render } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import Banner from "./Banner.svelte";

describe("Banner", () => {
  it("says why the app is not connected, and nothing once it is", async () => {
    const { container, rerender } = render(Banner, { connection: "connecting" });
    const banner = () => container.querySelector(".banner");
    expect(banner()?.textContent).toBe("Connecting to the server…");
    await rerender({ connection: "offline" });
    expect(banner()?.textContent).toMatch(/^Offline: showing saved messages/);
    await rerender({ connection: "crowded" });
    expect(banner()?.getAttribute("data-state")).toBe("crowded");
    expect(banner()?.textContent).toMatch(/as many computers as the server allows: close Natter on one of them/);
    await rerender({ connection: "online" });
    expect(banner()).toBeNull();
  });
});
