// Small pure rules of what the UI shows, kept apart to be tested alone.

import type { MessageView } from "./backend";

/** A piece of a line of text; `isolated` for a name, shown in a <bdi> so
 *  that its direction (a Hebrew name, say) does not reorder the words and
 *  numbers around it. */
export interface Segment { text: string; isolated: boolean }

const own = (text: string): Segment => ({ text, isolated: false });
const theirs = (text: string): Segment => ({ text, isolated: true });

/** The line as plain text. */
export function plain(segments: Segment[]): string {
  return segments.map((segment) => segment.text).join("");
}

/** "Ann is typing…", "Ann and Bob are typing…", "Ann, Bob and 2 others are typing…". */
export function typingSegments(names: string[]): Segment[] {
  if (names.length === 0) return [];
  if (names.length === 1) return [theirs(names[0]), own(" is typing…")];
  if (names.length === 2) return [theirs(names[0]), own(" and "), theirs(names[1]), own(" are typing…")];
  const others = names.length - 2;
  return [theirs(names[0]), own(", "), theirs(names[1]), own(` and ${others} other${others === 1 ? "" : "s"} are typing…`)];
}

/** Up to two initials for an avatar without a picture. */
export function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return letters.map((w) => Array.from(w)[0]?.toUpperCase() ?? "").join("") || "?";
}

/** One formatter per format, made when first used: `toLocaleTimeString`
 *  with options builds a new `Intl.DateTimeFormat` (and its ICU objects)
 *  on every call, and the message list calls these for every row it shows.
 *  A formatter keeps the time zone it was made in, until the app restarts. */
function formatter(options: Intl.DateTimeFormatOptions): (date: Date) => string {
  let made: Intl.DateTimeFormat | undefined;
  return (date) => (made ??= new Intl.DateTimeFormat(undefined, options)).format(date);
}

const timeOfDay = formatter({ hour: "2-digit", minute: "2-digit" });
const weekday = formatter({ weekday: "long" });
const longDate = formatter({ day: "numeric", month: "long", year: "numeric" });
const shortDate = formatter({ day: "numeric", month: "short" });
const dateAndTime = formatter({ dateStyle: "medium", timeStyle: "medium" });

/** "14:05": a message's time of day in the user's locale. */
export function timeLabel(iso: string): string {
  return timeOfDay(new Date(iso));
}

/** Under a message: its time once sent, else where it stands ("Sending…";
 *  "Waiting to send…" when the server could not take it for now and it is
 *  being sent again; "Not sent: <reason>" when refused for good). */
export function deliveryLabel(message: MessageView): string {
  if (message.status === "pending") return message.error ? "Waiting to send…" : "Sending…";
  if (message.status === "failed") return `Not sent: ${message.error ?? "refused"}`;
  return timeLabel(message.createdAt);
}

/** The tooltip of that line: why a pending message waits, else the full date and time. */
export function deliveryTooltip(message: MessageView): string {
  if (message.status === "pending" && message.error) return message.error;
  return fullTimeLabel(message.createdAt);
}

/** A message's full date and time, for its tooltip. */
export function fullTimeLabel(iso: string): string {
  return dateAndTime(new Date(iso));
}

function startOfDay(date: Date): number {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** Calendar days from `date` to `now` (rounded: a day around a clock
 *  change has 23 or 25 hours). */
function daysAgo(date: Date, now: Date): number {
  return Math.round((startOfDay(now) - startOfDay(date)) / 86_400_000);
}

/** A date separator's text: "Today", "Yesterday", a weekday within the
 *  week, else the date ("3 March 2026"). */
export function dayLabel(iso: string, now: Date = new Date()): string {
  const date = new Date(iso);
  const days = daysAgo(date, now);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days > 1 && days < 7) return weekday(date);
  return longDate(date);
}

/** The chat list's time column: the time today, else a short date. */
export function listTimeLabel(iso: string, now: Date = new Date()): string {
  const date = new Date(iso);
  const days = daysAgo(date, now);
  if (days === 0) return timeLabel(iso);
  if (days === 1) return "Yesterday";
  return shortDate(date);
}

/** The local day a timestamp falls on, as a key to compare days. */
export function dayKey(iso: string): string {
  const date = new Date(iso);
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

/** Characters as the server counts them (Unicode scalar values), so an
 *  emoji counts as the server would count it. */
export function charCount(text: string): number {
  return Array.from(text).length;
}

/** Why `name` (trimmed, as the server trims it) is too long for `max`
 *  characters; "" when it is not. `what`: "A name", "A group name". */
export function tooLong(name: string, max: number, what: string): string {
  return charCount(name.trim()) > max ? `${what} has at most ${max} characters` : "";
}

/** A piece of a message's text: plain, or a link to show as one. */
export type Part = { text: string; url?: undefined } | { text: string; url: string };

/** A message's text cut into plain text and the web links in it
 *  (`http://` and `https://`), so that links can be clicked; punctuation
 *  right after one is not part of it, nor a closing bracket it does not
 *  open itself ("(see https://a.example/x)", but
 *  "https://en.wikipedia.org/wiki/Tea_(drink)" whole). Clicking one opens
 *  the user's browser (the app's window never leaves its page). */
export function linkParts(content: string): Part[] {
  const parts: Part[] = [];
  let from = 0;
  for (const match of content.matchAll(/https?:\/\/[^\s<>"]+/gi)) {
    const url = trimLinkEnd(match[0]);
    const at = match.index ?? 0;
    if (!isUrl(url)) continue;
    if (at > from) parts.push({ text: content.slice(from, at) });
    parts.push({ text: url, url });
    from = at + url.length;
  }
  if (from < content.length) parts.push({ text: content.slice(from) });
  return parts;
}

const CLOSING: Record<string, string> = { ")": "(", "]": "[", "}": "{" };

/** `url` without the punctuation after it, and without closing brackets
 *  that have no opening one in it. */
function trimLinkEnd(url: string): string {
  let end = url.length;
  for (;;) {
    const last = url[end - 1];
    const opening = CLOSING[last];
    const unmatched = opening !== undefined
      && url.slice(0, end).split(opening).length <= url.slice(0, end).split(last).length - 1;
    if (!".,;:!?'\"".includes(last) && !unmatched) return url.slice(0, end);
    end -= 1;
  }
}

/** Whether `text` reads as a URL (`URL.canParse` needs a newer WebKit). */
function isUrl(text: string): boolean {
  try {
    new URL(text);
    return true;
  } catch {
    return false;
  }
}
