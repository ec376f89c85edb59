/**
 * Third-party modules for the benchmarks. `bench/` is not a workspace package (no package.json
 * of its own), so bare specifiers would not resolve from here; these are the very copies
 * @orch/shared uses.
 */
export { PgBoss } from '../packages/shared/node_modules/pg-boss/dist/index.js';
export { execa } from '../packages/shared/node_modules/execa/index.js';
