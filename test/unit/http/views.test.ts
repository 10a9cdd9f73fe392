// The screens' template filling: lists, and filled-in values never read as template text again.
import { describe, expect, it } from 'vitest';
import { Views } from '../../../src/http/views.ts';

describe('template filling', () => {
  const views = new Views();
  it('repeats a section once per item of a list, with the item\'s fields and the outer ones', () => {
    const html = views.fragment('offer-connections', { uid: 'u1', csrf: 'tok', method: 'oidc', connections: [{ id: 'a', name: 'Alpha' }, { id: 'b', name: 'Beta', logoUrl: 'https://x.example/b.png' }] }, 'en');
    expect(html.match(/<form /g)).toHaveLength(2);
    expect(html).toContain('name="connection" value="a"');
    expect(html).toContain('Continue with Beta');
    expect(html.match(/value="tok"/g)).toHaveLength(2);
    expect(html.match(/<img /g)).toHaveLength(1);
  });

  it('escapes values and never expands template syntax inside them', () => {
    const html = views.fragment('offer-connections', { uid: 'u1', csrf: 'secret-token', method: 'oidc', connections: [{ id: 'a', name: '<b>{{csrf}}</b> {{t.identify.or}}' }] }, 'en');
    expect(html).toContain('&#60;b&#62;{{csrf}}&#60;/b&#62; {{t.identify.or}}');
    expect(html.match(/secret-token/g)).toHaveLength(1);
  });
});
