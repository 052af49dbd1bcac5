// An open chat's history: the messages as the Rust side gives them, page by
// page and one by one, and the rows the list shows (date separators, the
// "new messages" marker, sender names in groups).
import type { MessageView } from "./backend";
import { dayKey } from "./text";

/** One message as the list draws it. The date separator and the "new
 *  messages" marker belong to the message under them, so an older page is
 *  a plain prepend for the virtualized list. */
export interface Row {
  key: string;
  message: MessageView;
  /** A date separator above: the day of this message. */
  day: string | null;
  /** The "new messages" marker above, with how many. */
  unread: number | null;
  /** In groups, the sender's name over the first of a run of their messages. */
  showSender: boolean;
}

/** A message's identity across its life: pending messages have no id from
 *  the server yet, but keep their clientId once sent. A clientId is its
 *  sender's own name for it: another sender may use the same. */
export function messageKey(message: MessageView): string {
  return message.clientId ? `c:${message.sender.id}:${message.clientId}` : `m:${message.id}`;
}

function sameMessage(a: MessageView, b: MessageView): boolean {
  return a.id === b.id
    || (a.clientId !== null && a.clientId === b.clientId && a.sender.id === b.sender.id);
}

/** Sent messages by seq, then the pending ones in the order they were written. */
function order(a: MessageView, b: MessageView): number {
  const seq = (a.seq ?? Number.MAX_SAFE_INTEGER) - (b.seq ?? Number.MAX_SAFE_INTEGER);
  if (seq !== 0) return seq;
  // As times: the text of two equal times may differ in its digits.
  return (Date.parse(a.createdAt) || 0) - (Date.parse(b.createdAt) || 0);
}

/** `messages` with `incoming` added or, where already there, replaced
 *  (a pending message becoming sent; a copy a server delivered and died
 *  before storing, stored later under another seq), in order. Returns a new
 *  array. A sent or failed message never goes back to pending: the answer
 *  to "send" (pending) can arrive after the ack's event (sent), a page read
 *  before a refusal for good after its event (failed). */
export function merge(messages: MessageView[], incoming: MessageView[]): MessageView[] {
  const next = messages.slice();
  let sorted = true;
  for (const message of incoming) {
    const i = next.findIndex((m) => sameMessage(m, message));
    if (i >= 0) {
      if (next[i].status === "pending" || message.status === "sent") {
        if (next[i].seq !== message.seq) sorted = false;
        next[i] = message;
      }
    }
    else {
      if (next.length > 0 && order(next[next.length - 1], message) > 0) sorted = false;
      next.push(message);
    }
  }
  if (!sorted || incoming.length > 1) next.sort(order);
  return next;
}

/** `messages` without those the user discarded (by clientId). A page read
 *  before a discard can arrive after it and would bring one back. One the
 *  server stored meanwhile (sent: it left before the discard) is real, and
 *  stays. */
export function withoutDiscarded(messages: MessageView[], discarded: ReadonlySet<string>): MessageView[] {
  if (discarded.size === 0) return messages;
  const kept = messages.filter((m) => m.status === "sent" || m.clientId === null || !discarded.has(m.clientId));
  return kept.length === messages.length ? messages : kept;
}

/** `messages` from seq `from` on, and those without a seq (ours, not
 *  stored yet): what stands beside a page that starts at `from`, without a
 *  gap below it. */
export function fromSeq(messages: MessageView[], from: number): MessageView[] {
  return messages.filter((m) => m.seq === null || m.seq >= from);
}

/** The lowest seq loaded: where the next older page ends. */
export function oldestSeq(messages: MessageView[]): number | null {
  for (const message of messages) if (message.seq !== null) return message.seq;
  return null;
}

/** The highest seq shown (pending messages have none), or null. */
export function newestSeq(messages: MessageView[]): number | null {
  for (let i = messages.length - 1; i >= 0; i--) {
    const seq = messages[i].seq;
    if (seq !== null) return seq;
  }
  return null;
}

/** The first of the `unread` newest messages from others, where the
 *  "new messages" marker goes; null when nothing is unread. With more
 *  unread than loaded, the oldest loaded from others: the marker (with
 *  the whole count) says the unread go on above it. */
export function firstUnread(messages: MessageView[], unread: number): string | null {
  if (unread <= 0) return null;
  let seen = 0;
  let oldest: string | null = null;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].mine) continue;
    seen += 1;
    oldest = messageKey(messages[i]);
    if (seen === unread) return oldest;
  }
  return oldest;
}

/** The rows to draw for `messages`: a date separator where the day
 *  changes, the marker above `unreadFrom`, and in groups the sender's name
 *  over the first of a run of someone else's messages. */
export function rows(messages: MessageView[], options: { isGroup: boolean; unreadFrom: string | null; unreadCount: number }): Row[] {
  const out: Row[] = [];
  let day = "";
  let previousSender = "";
  for (const message of messages) {
    const key = messageKey(message);
    const thisDay = dayKey(message.createdAt);
    const newDay = thisDay !== day;
    day = thisDay;
    const unread = key === options.unreadFrom ? options.unreadCount : null;
    const showSender = options.isGroup && !message.mine
      && (newDay || unread !== null || previousSender !== message.sender.id);
    out.push({ key, message, day: newDay ? message.createdAt : null, unread, showSender });
    previousSender = message.sender.id;
  }
  return out;
}
