// The admin API's JSON body reader: what counts as a body, the content types it takes, and the
// size and depth bounds that keep deep or large input from reaching anything that recurses.
import { Readable } from 'node:stream';
import type { Context } from 'koa';
import { describe, expect, it } from 'vitest';
import { checkJsonDepth, parseBoundedJson, readJsonBody } from '../../../src/http/json-body.ts';

/** A request as Koa hands it over: headers and a body stream (which tells whether it was read). */
function request(headers: Record<string, string>, chunks: (string | Buffer)[] = []) {
  const stream = Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c) : c)));
  const ctx = { req: Object.assign(stream, { headers }) } as unknown as Context;
  return { ctx, read: () => stream.readableDidRead };
}

const json = (text: string, extra: Record<string, string> = {}) => request({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...extra }, [text]);

describe('checkJsonDepth', () => {
  const nested = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;

  it('accepts 32 levels and refuses 33, objects and arrays alike', () => {
    expect(() => checkJsonDepth(nested(32))).not.toThrow();
    expect(() => checkJsonDepth(nested(33))).toThrow('the request body is nested deeper than 32 levels');
    expect(() => checkJsonDepth(`${'{"a":'.repeat(33)}1${'}'.repeat(33)}`)).toThrow(/deeper than 32/);
    expect(() => checkJsonDepth(nested(3), 2, 'standard input')).toThrow('standard input is nested deeper than 2 levels');
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    expect(() => checkJsonDepth(JSON.stringify({ a: '['.repeat(100), b: '\\"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{' }), 2)).not.toThrow();
    expect(() => checkJsonDepth(JSON.stringify(['\\', [[]]]), 2)).toThrow(/deeper than 2/);
  });

  it('counts depth, not the number of containers', () => {
    expect(() => checkJsonDepth(JSON.stringify(Array.from({ length: 5000 }, () => [{}])), 3)).not.toThrow();
  });
});

describe('parseBoundedJson', () => {
  it('parses, and names what it read in its refusals without quoting the input', () => {
    expect(parseBoundedJson('{"a":[1]}')).toEqual({ a: [1] });
    expect(() => parseBoundedJson('{"password": "hunter2"')).toThrow(/^the request body is not valid JSON$/);
    expect(() => parseBoundedJson('nope', { what: 'standard input' })).toThrow('standard input is not valid JSON');
    // 12,000 levels: refused before JSON.parse, so nothing later recurses through them.
    expect(() => parseBoundedJson(`${'['.repeat(12_000)}${']'.repeat(12_000)}`)).toThrow(/nested deeper than 32 levels/);
  });
});

describe('readJsonBody', () => {
  it('reads and parses an application/json body, with or without a UTF-8 charset', async () => {
    const body = json('{"now":true}');
    expect(await readJsonBody(body.ctx)).toEqual({ now: true });
    expect(body.read()).toBe(true);
    expect(await readJsonBody(json('{"now":true}', { 'content-type': 'Application/JSON; charset="UTF-8"' }).ctx)).toEqual({ now: true });
    expect(await readJsonBody(request({ 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, ['{"a":', '1}']).ctx)).toEqual({ a: 1 });
  });

  it('has no body without Content-Length or with Content-Length 0, whatever the Content-Type', async () => {
    expect(await readJsonBody(request({}).ctx)).toBeUndefined();
    expect(await readJsonBody(request({ 'content-length': '0' }).ctx)).toBeUndefined();
    expect(await readJsonBody(request({ 'content-length': '0', 'content-type': 'text/plain' }).ctx)).toBeUndefined();
    expect(await readJsonBody(request({ 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, []).ctx)).toBeUndefined();
  });

  it('refuses a body that is not application/json with 415, unread', async () => {
    const refused: Record<string, string>[] = [
      { 'content-length': '12' },
      { 'content-length': '12', 'content-type': 'text/plain' },
      { 'content-length': '12', 'content-type': 'application/x-www-form-urlencoded' },
      { 'content-length': '12', 'content-type': 'multipart/form-data; boundary=x' },
      { 'content-length': '12', 'content-type': 'application/json; charset=latin1' },
      { 'content-length': '12', 'content-type': 'application/jsonx' },
      { 'content-length': '12', 'content-type': 'application/json', 'content-encoding': 'gzip' },
      { 'transfer-encoding': 'chunked', 'content-type': 'text/plain' },
    ];
    for (const headers of refused) {
      const { ctx, read } = request(headers, ['{"now":true}']);
      await expect(readJsonBody(ctx), JSON.stringify(headers)).rejects.toMatchObject({ status: 415, expose: true });
      expect(read()).toBe(false);
    }
  });

  it('refuses more than the limit with 413: unread when Content-Length says so, else once the limit is passed', async () => {
    const declared = request({ 'content-type': 'application/json', 'content-length': String(64 * 1024 + 1) }, ['{}']);
    await expect(readJsonBody(declared.ctx)).rejects.toMatchObject({ status: 413, message: 'the request body is larger than 64 KiB' });
    expect(declared.read()).toBe(false);
    const chunked = request({ 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, ['[', '1,'.repeat(600), '1]']);
    await expect(readJsonBody(chunked.ctx, { limit: 1000 })).rejects.toMatchObject({ status: 413 });
    expect(await readJsonBody(json(JSON.stringify({ name: 'x'.repeat(64 * 1024 - 20) })).ctx)).toMatchObject({ name: expect.any(String) });
  });

  it('refuses invalid UTF-8, invalid JSON and deep JSON with 400', async () => {
    const latin1 = Buffer.from([0x22, 0xe9, 0x22]);
    await expect(readJsonBody(request({ 'content-type': 'application/json', 'content-length': '3' }, [latin1]).ctx)).rejects.toMatchObject({ status: 400, message: 'the request body is not valid UTF-8' });
    await expect(readJsonBody(json('{"a":').ctx)).rejects.toMatchObject({ status: 400, message: 'the request body is not valid JSON' });
    await expect(readJsonBody(json(`{"attributes":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`).ctx)).rejects.toMatchObject({ status: 400, message: /nested deeper than 32 levels/ });
  });
});
