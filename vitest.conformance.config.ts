import { defineConfig } from 'vitest/config';
import base from './vitest.config.ts';

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['test/conformance/**/*.test.ts'],
    reporters: ['dot', './test/conformance/table-reporter.ts'],
  },
});
