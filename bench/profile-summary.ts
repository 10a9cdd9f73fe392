// Prints where a CPU profile spent its time: `node bench/profile-summary.ts FILE.cpuprofile [TOP]`
// (e.g. a profile the suite wrote with BENCH_PROFILE=1).
import { printSummary, summarizeProfile } from './lib/profile.ts';

const [file, top] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-summary.ts FILE.cpuprofile [TOP]');
  process.exit(2);
}
printSummary(summarizeProfile(file, Number(top ?? 25)), Number(top ?? 25));
