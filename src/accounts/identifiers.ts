// Email addresses as account identifiers: one canonical form per address, refusal of characters
// that make two different addresses look the same (or an address look like something it is not),
// and a "skeleton" that is equal for addresses a reader cannot tell apart (Unicode UTS #39).
//
// Canonical form: NFKC, lower-case, the domain in its IDNA (UTS #46) Unicode form. NFKC rather
// than NFC because compatibility variants (fullwidth letters, ligatures, mathematical letters)
// are never different mailboxes to a person reading them; it is also what addresses have been
// stored in since the first accounts, so existing rows keep matching.
import { createRequire } from 'node:module';
import { domainToASCII, domainToUnicode } from 'node:url';

// confusables.txt of Unicode UTS #39 (source character → prototype), as shipped by unhomoglyph.
const confusables = createRequire(import.meta.url)('unhomoglyph/data.json') as Record<string, string>;

const hex = (char: string) => `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

// With the u flag a lone surrogate is its own code point of category Cs; a valid pair is not.
const loneSurrogate = /\p{Cs}/u;
const control = /\p{Cc}/u;
const bidiControl = /\p{Bidi_Control}/u;
// Format characters and default-ignorables render as nothing (zero-width space, joiners, soft
// hyphen, word joiner, Hangul fillers, variation selectors, tags…); the blank Braille pattern and
// replacement characters look like nothing or like any character.
const invisible = /[\p{Cf}\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}\u2800\uFFFC\uFFFD]/u;
// Private-use and unassigned code points have no agreed look (and NFKC is not stable for the latter).
const undefinedLook = /[\p{Co}\p{Cn}]/u;

/** Why a string cannot be (part of) an identifier, naming the first offending code point; undefined when fine. */
export function identifierCharacterProblem(text: string): string | undefined {
  if (loneSurrogate.test(text)) return 'it is not well-formed Unicode (it contains a lone surrogate)';
  for (const char of text) {
    if (control.test(char)) return `it contains the control character ${hex(char)}`;
    if (bidiControl.test(char)) return `it contains the bidirectional control character ${hex(char)}`;
    if (invisible.test(char)) return `it contains the invisible or formatting character ${hex(char)}`;
    if (undefinedLook.test(char)) return `it contains the private-use or unassigned code point ${hex(char)}`;
  }
  return undefined;
}

/**
 * For logs and error messages: the characters an identifier may not have, written as \u{…}, so a
 * bidi override or a NUL in someone's input cannot reorder or cut what an operator reads.
 */
export function printable(text: string, max = 320): string {
  return [...text.slice(0, max)].map((char) => (control.test(char) || bidiControl.test(char) || invisible.test(char) || undefinedLook.test(char) || loneSurrogate.test(char) ? `\\u{${char.codePointAt(0)!.toString(16)}}` : char)).join('');
}

const emailPattern = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]{1,253}\.[^\s@.\p{Cc}]{1,63}$/u;
// After IDNA: DNS labels (underscores and hyphens allowed anywhere, as addresses have had them).
const asciiLabel = /^[a-z0-9_-]{1,63}$/;

/** The domain in its one stored form (IDNA Unicode form), or undefined when it is no domain name. */
function canonicalDomain(domain: string): string | undefined {
  // domainToASCII parses like a URL host: a '#', '?' or '/' would silently cut the rest off.
  if (/[#?/\\:]/.test(domain)) return undefined;
  const ascii = domainToASCII(domain);
  if (!ascii || ascii.length > 253) return undefined;
  const labels = ascii.split('.');
  if (!labels.every((label) => asciiLabel.test(label))) return undefined;
  // An all-digit last label is an IPv4 address to the URL parser (which rewrites 0x7f.1 as 127.0.0.1).
  if (/^\d+$/.test(labels.at(-1)!)) return undefined;
  const unicode = domainToUnicode(ascii);
  // An xn-- label that does not decode (or does not round-trip) is not a name anyone can read.
  if (domainToASCII(unicode) !== ascii || unicode.split('.').some((label) => label.startsWith('xn--'))) return undefined;
  return unicode;
}

export type CanonicalEmail = { ok: true; email: string } | { ok: false; problem: string };

/** The canonical form of an address, or why it is not a valid one (the problem is safe to show). */
// Not String.prototype.trim: that also drops U+FEFF, which is a format character to refuse.
const trimWhiteSpace = (text: string) => text.replace(/^\p{White_Space}+|\p{White_Space}+$/gu, '');

export function canonicalEmail(input: string): CanonicalEmail {
  const trimmed = trimWhiteSpace(input);
  const raw = identifierCharacterProblem(trimmed);
  if (raw) return { ok: false, problem: raw };
  const folded = trimmed.normalize('NFKC').toLowerCase();
  const after = identifierCharacterProblem(folded);
  if (after) return { ok: false, problem: after };
  const invalid = { ok: false as const, problem: JSON.stringify(trimmed.slice(0, 100)) };
  if (!emailPattern.test(folded)) return invalid;
  const at = folded.lastIndexOf('@');
  const domain = canonicalDomain(folded.slice(at + 1));
  if (!domain) return { ok: false, problem: `the domain ${JSON.stringify(folded.slice(at + 1, at + 101))} is not a valid domain name` };
  const email = `${folded.slice(0, at)}@${domain}`;
  return emailPattern.test(email) ? { ok: true, email } : invalid;
}

/**
 * The form addresses were stored in before the IDNA rule (NFKC, lower-case, domain as typed), for
 * lookups of accounts created then with a punycode domain. Never used to create anything.
 */
export function legacyEmailForm(input: string): string {
  return trimWhiteSpace(input).normalize('NFKC').toLowerCase();
}

/**
 * Equal for addresses that look alike: UTS #39's skeleton (NFD, confusables mapped to their
 * prototype, NFD again), applied to non-ASCII characters only, then lower-cased. ASCII is left as
 * it is on purpose: "rn" vs "m" or "l" vs "1" are ambiguities addresses have always had, and
 * refusing them would turn away addresses people already use; what is caught is a character from
 * another script or block posing as a Latin one (Cyrillic а, Greek ο, dotless ı, …).
 * Takes a canonical address (see canonicalEmail).
 */
export function emailSkeleton(canonical: string): string {
  let out = '';
  for (const char of canonical.normalize('NFD')) out += char.charCodeAt(0) < 0x80 ? char : (confusables[char] ?? char);
  return out.normalize('NFD').toLowerCase();
}

// Joiners, variation selectors, Mongolian free variation selectors and tag characters are
// default-ignorable too, but scripts (Persian, Indic, Mongolian) and emoji sequences need them.
const nameAllowedIgnorable = /[\u180B-\u180F\u200C\u200D\uFE00-\uFE0F\u{E0020}-\u{E007F}\u{E0100}-\u{E01EF}]/u;
const nameInvisible = /[\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}\u2800]/u;

/**
 * Why a display name cannot be stored; undefined when fine. Names are free text, so only what
 * spoofs or breaks is refused: control characters (a NUL breaks PostgreSQL), lone surrogates (not
 * text at all), bidi controls (they reorder what is displayed around them) and invisible characters.
 */
export function nameCharacterProblem(name: string): string | undefined {
  if (control.test(name)) return 'name must not contain control characters';
  if (loneSurrogate.test(name)) return 'name must be well-formed Unicode text (it contains a lone surrogate)';
  for (const char of name) {
    if (bidiControl.test(char)) return `name must not contain bidirectional control characters (${hex(char)})`;
    if (nameInvisible.test(char) && !nameAllowedIgnorable.test(char)) return `name must not contain invisible characters or line separators (${hex(char)})`;
  }
  return undefined;
}
