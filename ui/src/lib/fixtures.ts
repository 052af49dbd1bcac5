// Test data in the shapes the Rust side sends.
import type { ChatSummary, MessageView, User } from "./backend";

export const ann: User = { id: "u-ann", name: "Ann Lee", email: "ann@example.com", pic: null };
export const bob: User = { id: "u-bob", name: "Bob", email: "bob@example.com", pic: null };
export const zoe: User = { id: "u-zoe", name: "Zoë", email: "zoe@example.com", pic: null };

export function message(seq: number | null, sender: User, content: string, createdAt: string, extra: Partial<MessageView> = {}): MessageView {
  return {
    id: seq === null ? `pending-${content}` : `m${seq}`, clientId: null, chatId: "c1", seq, sender, content, createdAt,
    mine: sender.id === ann.id, status: seq === null ? "pending" : "sent", error: null, ...extra,
  };
}

export function chat(id: string, name: string, updatedAt: string, extra: Partial<ChatSummary> = {}): ChatSummary {
  return {
    id, name, isGroup: false, pic: null, members: [ann, bob], adminId: null, lastMessage: null, updatedAt, unread: 0, left: false, behind: false, ...extra,
  };
}
