// What the composer does with a key and whether its text may be sent.
import { charCount } from "./text";

/** An input method's key: WebKit on macOS reports the Enter that picks a
 *  CJK candidate with `isComposing` false, but with keyCode 229 (WebKit
 *  bug 165004). */
const IME_KEY_CODE = 229;

/** Enter sends; Shift+Enter (and Enter while an input method is composing,
 *  e.g. picking an emoji or a CJK character) stays in the text. */
export function keyAction(event: { key: string; shiftKey: boolean; isComposing: boolean; keyCode?: number }): "send" | "none" {
  const composing = event.isComposing || event.keyCode === IME_KEY_CODE;
  return event.key === "Enter" && !event.shiftKey && !composing ? "send" : "none";
}

export type Check =
  | { ok: true; count: number }
  | { ok: false; count: number; reason: "empty" | "tooLong"; message: string };

/** The same rules as the server's: not blank, at most `max` characters. */
export function checkMessage(text: string, max: number): Check {
  // What is sent: the engine leaves out blank lines and spaces around it.
  const count = charCount(text.trim());
  if (count === 0) return { ok: false, count, reason: "empty", message: "" };
  if (count > max) {
    return { ok: false, count, reason: "tooLong", message: `Too long: ${count} of at most ${max} characters` };
  }
  return { ok: true, count };
}

/** Show the counter once the text is within 10% of the limit. */
export function showCounter(count: number, max: number): boolean {
  return count >= max * 0.9;
}
