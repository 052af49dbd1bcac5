// The chat list's rules: which chats show for a filter, in which order.
import type { ChatSummary, User } from "./backend";

/** When a chat last saw activity: its last message, else its own change. */
export function activity(chat: ChatSummary): string {
  const last = chat.lastMessage?.createdAt;
  return last && last > chat.updatedAt ? last : chat.updatedAt;
}

/** The chats to show, newest activity first, matching `filter` by the
 *  chat's name or a member's name (case- and accent-insensitive). */
export function visibleChats(chats: ChatSummary[], filter: string): ChatSummary[] {
  const needle = fold(filter.trim());
  return chats
    .filter((chat) => !needle || fold(chat.name).includes(needle)
      || chat.members.some((member) => fold(member.name).includes(needle)))
    .sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0));
}

/** Lower case without accents: "Zoë" matches "zoe". */
export function fold(text: string): string {
  return text.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
}

/** The preview line under a chat's name: who wrote (in groups) and what. */
export function preview(chat: ChatSummary): string {
  const last = chat.lastMessage;
  if (!last) return chat.isGroup ? `${chat.members.length} members` : "";
  const text = last.content.replace(/\s+/g, " ");
  if (last.mine) return `You: ${text}`;
  return chat.isGroup ? `${last.sender.name}: ${text}` : text;
}

/** Whether `me` may rename the group and add or remove its members. */
export function isAdmin(chat: ChatSummary, me: User | null): boolean {
  return chat.isGroup && me !== null && chat.adminId === me.id;
}
