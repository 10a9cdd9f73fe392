// Server-side rendering of the interaction screens from interactions/templates. Templates use
// {{name}} (HTML-escaped), {{t.key}} (translation, escaped) and {{{name}}} (fragments this module
// built and escaped itself). No inline scripts or styles: the CSP forbids them.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../interactions/', import.meta.url));

export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loadDir(dir: string, ext: string): Map<string, string> {
  return new Map(readdirSync(root + dir).filter((f) => f.endsWith(ext)).map((f) => [f.slice(0, -ext.length), readFileSync(`${root}${dir}/${f}`, 'utf8')]));
}

export type Translations = Record<string, string>;

export class Views {
  readonly #templates = loadDir('templates', '.html');
  readonly #locales = new Map([...loadDir('locales', '.json')].map(([k, v]) => [k, JSON.parse(v) as Translations]));
  readonly defaultLocale = 'en';

  get locales(): string[] {
    return [...this.#locales.keys()];
  }

  /** Picks the first supported locale from ui_locales, then Accept-Language. */
  negotiate(uiLocales: string | undefined, acceptLanguage: string | undefined): string {
    const wanted = [
      ...(uiLocales ?? '').split(' '),
      ...(acceptLanguage ?? '').split(',').map((part) => part.split(';')[0]!.trim()),
    ].filter(Boolean);
    for (const tag of wanted) {
      const lang = tag.toLowerCase().split('-')[0]!;
      if (this.#locales.has(lang)) return lang;
    }
    return this.defaultLocale;
  }

  t(locale: string, key: string, params: Record<string, string> = {}): string {
    const text = this.#locales.get(locale)?.[key] ?? this.#locales.get(this.defaultLocale)?.[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name: string) => params[name] ?? '');
  }

  #fill(name: string, vars: Record<string, unknown>, locale: string): string {
    const template = this.#templates.get(name);
    if (template === undefined) throw new Error(`no template ${name}`);
    return this.#render(template, vars, locale);
  }

  /**
   * One pass over the template, so that filled-in values are never read as template text again:
   * {{#name}}…{{/name}} is there only when `name` is truthy (a switched-on feature), once per item
   * when it is a list (with the item's fields); {{{name}}} is trusted HTML (a filled fragment);
   * {{t.key}} a translation and {{name}} a value, both escaped.
   */
  #render(template: string, vars: Record<string, unknown>, locale: string): string {
    return template.replace(/\{\{#(\w+)\}\}([\s\S]*?)\{\{\/\1\}\}|\{\{\{(\w+)\}\}\}|\{\{t\.([\w.]+)\}\}|\{\{(\w+)\}\}/g,
      (_, section?: string, inner?: string, raw?: string, key?: string, value?: string) => {
        if (section !== undefined) {
          const on = vars[section];
          if (Array.isArray(on)) return on.map((item) => this.#render(inner!, { ...vars, ...(item as Record<string, unknown>) }, locale)).join('');
          return on ? this.#render(inner!, vars, locale) : '';
        }
        if (raw !== undefined) return String(vars[raw] ?? '');
        if (key !== undefined) return escapeHtml(this.t(locale, key));
        return escapeHtml(vars[value!]);
      });
  }

  /** A template without the page around it (a part of another screen). */
  fragment(name: string, vars: Record<string, unknown>, locale: string): string {
    return this.#fill(name, vars, locale);
  }

  page(name: string, title: string, vars: Record<string, unknown>, locale: string): string {
    return this.#fill('layout', { lang: locale, title, body: this.#fill(name, vars, locale) }, locale);
  }

  errorList(messages: string[]): string {
    if (!messages.length) return '';
    return `<ul class="errors" role="alert">${messages.map((m) => `<li>${escapeHtml(m)}</li>`).join('')}</ul>`;
  }

  /** A plain page with a heading, a message, optional key/value details and links onward (all escaped). */
  message(heading: string, message: string, locale: string, details: Record<string, string | undefined> = {}, links: { href: string; label: string }[] = []): string {
    const rows = Object.entries(details).filter(([, v]) => v);
    const dl = rows.length ? `<dl class="details">${rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>` : '';
    const onward = links.map((link) => `<p class="links"><a href="${escapeHtml(link.href)}">${escapeHtml(link.label)}</a></p>`).join('');
    return this.page('message', heading, { heading, message, details: dl + onward }, locale);
  }
}

export const staticDir = `${root}static/`;
