import { fireEvent, render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ann } from "../lib/fixtures";
import Login from "./Login.svelte";

const signUp = vi.hoisted(() => vi.fn(async (..._args: unknown[]) => ann));
const setServerUrl = vi.hoisted(() => vi.fn(async (url: string) => url));
vi.mock("../lib/backend", async (original) => ({
  ...(await original<typeof import("../lib/backend")>()),
  backend: { signUp, setServerUrl },
}));

const limits = { contentMaxChars: 4096, nameMaxChars: 64, passwordMinChars: 8, chatNameMaxChars: 64 };

// jsdom draws nothing: a picture "decodes" to a 10×10 bitmap and encodes to three bytes.
function canvasThatDraws() {
  vi.stubGlobal("createImageBitmap", vi.fn(async () => ({ width: 10, height: 10 })));
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockReturnValue({ drawImage() {} } as never);
  vi.spyOn(HTMLCanvasElement.prototype, "toDataURL").mockReturnValue("data:image/png;base64,AAAA");
  const encoded = { arrayBuffer: async () => new Uint8Array([1, 2, 3]).buffer } as Blob;
  vi.spyOn(HTMLCanvasElement.prototype, "toBlob").mockImplementation((done) => done(encoded));
}

afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe("Login", () => {
  it("does not send a picture picked on a sign-up form that was left and opened again", async () => {
    canvasThatDraws();
    render(Login, { serverUrl: "http://127.0.0.1:8080", limits, note: "", onsignedin: () => {} });
    const toggle = screen.getByText("Create an account");
    await fireEvent.click(toggle);
    const file = new File([new Uint8Array([9])], "me.png", { type: "image/png" });
    await fireEvent.change(document.querySelector("#pic")!, { target: { files: [file] } });
    await vi.waitFor(() => expect(screen.getByAltText("Chosen profile")).toBeTruthy());
    await fireEvent.click(screen.getByText("I have an account"));
    await fireEvent.click(screen.getByText("Create an account"));
    expect(screen.queryByAltText("Chosen profile")).toBeNull();

    await fireEvent.input(document.querySelector("#name")!, { target: { value: "Ann" } });
    await fireEvent.input(document.querySelector("#email")!, { target: { value: "ann@example.org" } });
    await fireEvent.input(document.querySelector("#password")!, { target: { value: "correct horse" } });
    await fireEvent.click(screen.getByText("Sign up"));
    await vi.waitFor(() => expect(signUp).toHaveBeenCalled());
    expect(signUp.mock.calls[0][3]).toBeNull();
    expect(signUp.mock.calls[0][4]).toBeNull();
  });
  it("gives the invitation code typed, without the spaces around it, and none when blank", async () => {
    render(Login, { serverUrl: "http://127.0.0.1:8080", limits, note: "", onsignedin: () => {} });
    expect(document.querySelector("#invitation")).toBeNull();
    await fireEvent.click(screen.getByText("Create an account"));
    await fireEvent.input(document.querySelector("#name")!, { target: { value: "Ann" } });
    await fireEvent.input(document.querySelector("#email")!, { target: { value: "ann@example.org" } });
    await fireEvent.input(document.querySelector("#password")!, { target: { value: "correct horse" } });
    await fireEvent.input(screen.getByLabelText("Invitation code (if you were given one)"), { target: { value: "  our-team-code \n" } });
    await fireEvent.click(screen.getByText("Sign up"));
    await vi.waitFor(() => expect(signUp).toHaveBeenCalled());
    expect(signUp.mock.calls[0][4]).toBe("our-team-code");

    await fireEvent.input(document.querySelector("#invitation")!, { target: { value: "   " } });
    await fireEvent.click(screen.getByText("Sign up"));
    await vi.waitFor(() => expect(signUp).toHaveBeenCalledTimes(2));
    expect(signUp.mock.calls[1][4]).toBeNull();
  });
  it("counts a name in characters as the server does: emoji count once, and past the limit it says so", async () => {
    render(Login, { serverUrl: "http://127.0.0.1:8080", limits, note: "", onsignedin: () => {} });
    await fireEvent.click(screen.getByText("Create an account"));
    await fireEvent.input(document.querySelector("#email")!, { target: { value: "ann@example.org" } });
    await fireEvent.input(document.querySelector("#password")!, { target: { value: "correct horse" } });
    const name = document.querySelector<HTMLInputElement>("#name")!;
    expect(name.hasAttribute("maxlength")).toBe(false);

    await fireEvent.input(name, { target: { value: "x".repeat(limits.nameMaxChars + 1) } });
    await fireEvent.click(screen.getByText("Sign up"));
    expect(screen.getByRole("alert").textContent).toBe(`A name has at most ${limits.nameMaxChars} characters`);
    expect(signUp).not.toHaveBeenCalled();

    await fireEvent.input(name, { target: { value: "🙂".repeat(limits.nameMaxChars) } });
    await fireEvent.click(screen.getByText("Sign up"));
    await vi.waitFor(() => expect(signUp).toHaveBeenCalled());
  });
});
