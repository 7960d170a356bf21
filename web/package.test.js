// Tests of web/ as an npm package: package.json, the exports map, and the
// TypeScript declarations (msgnet.d.ts), which tsc checks over
// testdata/types-check*.ts. tsc comes from the devDependency typescript
// (npm ci in web/); without it the tsc test is skipped, or fails when CI
// or MSGNET_REQUIRE_TOOLS=1 is set. Run: node --test web/ (or npm test in web/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as msgnet from './msgnet.js';

const dir = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const dts = readFileSync(join(dir, 'msgnet.d.ts'), 'utf8');
const required = process.env.MSGNET_REQUIRE_TOOLS === '1' || !!process.env.CI;

test('package.json: an ES module package with types, and no dependencies', () => {
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.license, 'BSD-3-Clause');
  assert.match(pkg.version, /^\d+\.\d+\.\d+/);
  assert.deepEqual(pkg.exports['.'], { types: './msgnet.d.ts', default: './msgnet.js' });
  assert.equal(pkg.types, './msgnet.d.ts');
  assert.equal(pkg.engines.node, '>=18');
  assert.equal(pkg.dependencies, undefined, 'msgnet.js has no dependencies');
  assert.ok(!('private' in pkg));
  for (const f of [...pkg.files, pkg.types, ...Object.values(pkg.exports['.'])]) {
    assert.ok(existsSync(join(dir, f)), `${f} is listed but missing`);
  }
  for (const f of ['msgnet.js', 'msgnet.d.ts', 'README.md']) assert.ok(pkg.files.includes(f), `files lacks ${f}`);
});

test('the package imports by its name', async () => {
  // A package can import itself by name through its exports map.
  const self = await import(pkg.name);
  assert.deepEqual(Object.keys(self).sort(), Object.keys(msgnet).sort());
  assert.equal(self.Client, msgnet.Client);
});

test('msgnet.d.ts declares every export of msgnet.js, and nothing else', () => {
  const declared = [...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]);
  const runtime = Object.keys(msgnet).sort();
  assert.deepEqual([...new Set(declared)].sort(), runtime);
  // types-check.ts uses each of them.
  const check = readFileSync(join(dir, 'testdata', 'types-check.ts'), 'utf8');
  const imported = /import \{([^}]*)\} from '@msgnet\/client'/.exec(check)[1].split(',').map((s) => s.trim()).filter(Boolean);
  assert.deepEqual(imported.sort(), runtime);
  for (const name of runtime) {
    const uses = check.split(new RegExp(`\\b${name}\\b`)).length - 1;
    assert.ok(uses >= 2, `types-check.ts imports ${name} but does not use it`);
  }
  // And every exported type.
  const types = [...dts.matchAll(/^export (?:type|interface) (\w+)/gm)].map((m) => m[1]);
  const importedTypes = /import type \{([^}]*)\} from '@msgnet\/client'/.exec(check)[1].split(',').map((s) => s.trim()).filter(Boolean);
  assert.deepEqual(importedTypes.sort(), [...new Set(types)].sort());
});

// tsc finds the TypeScript compiler installed in node_modules, or ends
// the test.
function tsc(t) {
  let bin;
  try {
    bin = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
  } catch {
    const why = 'typescript is not installed: run npm ci in web/';
    if (required) assert.fail(`${why} (CI or MSGNET_REQUIRE_TOOLS=1 is set: no test may pass by skipping)`);
    t.skip(why);
    return null;
  }
  return (args) => {
    const r = spawnSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.error, undefined);
    assert.equal(r.status, 0, `tsc ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
}

test('tsc --strict accepts the declarations as used, and refuses the misuse marked in types-check.ts', (t) => {
  const run = tsc(t);
  if (!run) return;
  const common = ['--noEmit', '--strict', '--target', 'es2022', '--pretty', 'false'];
  // In Node, with no DOM (nor Node) types: the declarations stand alone;
  // the file imports the package by name, so the exports map is used.
  run([...common, '--exactOptionalPropertyTypes', '--lib', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'testdata/types-check.ts']);
  // For a bundler, with the DOM: a browser's WebSocket and AbortSignal fit.
  run([...common, '--lib', 'es2022,dom', '--module', 'esnext', '--moduleResolution', 'bundler', 'testdata/types-check.ts', 'testdata/types-check-dom.ts']);
});
