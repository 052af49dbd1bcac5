// The chat list's rules: which chats show for a filter, in which order.
import type { ChatSummary, User } from "./backend";
import type { Segment } from "./text";

/** When a chat last saw activity (ms since the epoch): its last message,
 *  else its own change. Compared as times, not as text: the server writes
 *  as many digits of a second as it needs ("10:00:05Z", "10:00:05.300Z"). */
export function activity(chat: ChatSummary): number {
  const changed = Date.parse(chat.updatedAt) || 0;
  const last = chat.lastMessage ? Date.parse(chat.lastMessage.createdAt) || 0 : 0;
  return Math.max(last, changed);
}

/** The chats to show, newest activity first, matching `filter` by the
 *  chat's name or a member's name (case- and accent-insensitive). The
 *  user (`meId`) is a member of every chat: their own name matches none. */
export function visibleChats(chats: ChatSummary[], filter: string, meId: string | null = null): ChatSummary[] {
  const needle = fold(filter.trim());
  return chats
    .filter((chat) => !needle || fold(chat.name).includes(needle)
      || chat.members.some((member) => member.id !== meId && fold(member.name).includes(needle)))
    .sort((a, b) => activity(b) - activity(a));
}

/** Lower case without accents: "Zoë" matches "zoe". */
export function fold(text: string): string {
  return text.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
}

/** The preview line under a chat's name: who wrote (in groups) and what;
 *  one's own message still to go out with a clock, one refused as not sent.
 *  The sender's name is set apart (`Segment`); the text is not, so that
 *  the line takes its direction. */
export function previewSegments(chat: ChatSummary): Segment[] {
  const last = chat.lastMessage;
  if (!last) return chat.isGroup ? [{ text: `${chat.members.length} members`, isolated: false }] : [];
  const text = { text: last.content.replace(/\s+/g, " "), isolated: false };
  const lead = (words: string) => [{ text: words, isolated: false }, text];
  if (last.mine && last.status === "pending") return lead("🕓 You: ");
  if (last.mine && last.status === "failed") return lead("Not sent: ");
  if (last.mine) return lead("You: ");
  if (!chat.isGroup) return [text];
  return [{ text: last.sender.name, isolated: true }, { text: ": ", isolated: false }, text];
}


/** Whether `me` may rename the group and add or remove its members. */
export function isAdmin(chat: ChatSummary, me: User | null): boolean {
  return chat.isGroup && !chat.left && me !== null && chat.adminId === me.id;
}
