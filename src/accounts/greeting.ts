// Whom a mail greets. Anyone can register (or be given) a name and any address, so a mail's
// greeting could carry text of a stranger's choosing to someone else's mailbox ("Hello Prize
// waiting at http://…,"). A mail therefore greets by name only when the name looks like a
// person's name, short and without anything a reader could follow; otherwise by the address,
// which is the recipient's own.
import { nameCharacterProblem } from './identifiers.ts';

const maxLength = 40;
// Up to 4 words of letters (with marks, apostrophes and hyphens); a word may end with a period
// (an initial, "Dr."), which a domain name's dot never does. No digits, no '@', ':' or '/'.
const plainName = /^\p{L}[\p{L}\p{M}'’-]*\.?(?: \p{L}[\p{L}\p{M}'’-]*\.?){0,3}$/u;

export function isGreetableName(name: string): boolean {
  return [...name].length <= maxLength && plainName.test(name) && !/\p{Default_Ignorable_Code_Point}/u.test(name) && nameCharacterProblem(name) === undefined;
}

export function greetingFor(account: { name: string | null; email: string }): string {
  return account.name && isGreetableName(account.name) ? account.name : account.email;
}
