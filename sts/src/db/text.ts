/**
 * Whether Postgres can store `text` exactly as given: no NUL (Postgres `text` refuses it) and no lone
 * UTF-16 surrogate (not Unicode: it would be stored as U+FFFD, a silent change).
 */
export function isStorableText(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit === 0) return false;
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1); // NaN past the end
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i += 1;
    } else if (unit >= 0xdc00 && unit <= 0xdfff) return false;
  }
  return true;
}

/** Whether `text` holds a control character (C0, DEL or C1). */
export function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x20 || (unit >= 0x7f && unit <= 0x9f)) return true;
  }
  return false;
}

/** `text` with every NUL and lone surrogate replaced by U+FFFD, so Postgres (text or jsonb) stores it. */
export function toStorableText(text: string): string {
  if (isStorableText(text)) return text;
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit === 0) out += "\ufffd";
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += text.slice(i, i + 2);
        i += 1;
      } else out += "\ufffd";
    } else if (unit >= 0xdc00 && unit <= 0xdfff) out += "\ufffd";
    else out += text[i];
  }
  return out;
}

/** The longest prefix of `text` made of whole code points that fits `maxBytes` of UTF-8. */
export function utf8Prefix(text: string, maxBytes: number): string {
  let size = 0;
  let end = 0;
  for (const codePoint of text) {
    const bytes = Buffer.byteLength(codePoint, "utf8");
    if (size + bytes > maxBytes) break;
    size += bytes;
    end += codePoint.length;
  }
  return text.slice(0, end);
}
