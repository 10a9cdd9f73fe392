// Prints the conformance checks as a table (group, check, result) after the run, with totals.
// Used by `npm run conformance`; the checks themselves are ordinary vitest tests.
import type { Reporter, TestModule } from 'vitest/node';

export default class ConformanceTableReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const rows: [string, string, string][] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        const group = test.parent.type === 'suite' ? test.parent.fullName : module.moduleId.split('/').pop()!;
        rows.push([group, test.name, state === 'passed' ? 'pass' : state === 'failed' ? 'FAIL' : state]);
      }
    }
    const widths = [0, 1].map((i) => Math.min(70, Math.max(...rows.map((r) => r[i]!.length), 5)));
    const cut = (text: string, width: number) => (text.length > width ? `${text.slice(0, width - 1)}…` : text.padEnd(width));
    const lines = [`${cut('group', widths[0]!)}  ${cut('check', widths[1]!)}  result`, `${'-'.repeat(widths[0]!)}  ${'-'.repeat(widths[1]!)}  ------`];
    for (const [group, name, result] of rows) lines.push(`${cut(group, widths[0]!)}  ${cut(name, widths[1]!)}  ${result}`);
    const passed = rows.filter((r) => r[2] === 'pass').length;
    const failed = rows.filter((r) => r[2] === 'FAIL').length;
    lines.push('', `conformance: ${passed} passed, ${failed} failed, ${rows.length - passed - failed} other, of ${rows.length} checks`);
    process.stdout.write(`\n${lines.join('\n')}\n`);
  }
}
