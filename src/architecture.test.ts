// The architecture, executable: every import of every .ts file under src/ is checked against the
// one table of allowed dependencies, the "Who may import whom" table of docs/architecture.md.
// Folders are the unit (src/<folder>/…); a table entry may also name one file (`delivery/destination`)
// or allow only `import type` (`log (types)`, erased before the code runs). Node built-ins and npm
// packages are not checked. Test files may also import what the table's third column names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

interface Allowed {
  /** A folder of src/ (`store`), one file of one (`delivery/destination`), or a path from the repository root (`test/harness`). */
  target: string;
  typesOnly: boolean;
}

interface Rule {
  folder: string;
  /** `*`: anything under src/. */
  mayImport: Allowed[] | '*';
  testsMayImport: Allowed[];
}

export type ImportTable = Map<string, Rule>;

function parseEntries(cell: string): Allowed[] | '*' {
  const text = cell.trim();
  if (text === '*') return '*';
  if (text === '' || text === '—' || text === '-') return [];
  return text.split(',').map((raw) => {
    const m = /^`?([a-z0-9/_-]+)`?(\s+\(types\))?$/.exec(raw.trim());
    if (!m) throw new Error(`docs/architecture.md: "${raw.trim()}" is not a folder, folder/file or "folder (types)"`);
    return { target: m[1], typesOnly: m[2] !== undefined };
  });
}

/** The table under the heading "Who may import whom": | folder | may import | tests may also import | why |. */
export function parseImportTable(markdown: string): ImportTable {
  const section = markdown.split(/^## /m).find((s) => s.startsWith('Who may import whom'));
  if (!section) throw new Error('docs/architecture.md has no "## Who may import whom" section');
  const rows = section.split('\n').filter((l) => l.startsWith('|')).slice(2); // header and rule line
  const table: ImportTable = new Map();
  for (const row of rows) {
    const cells = row.split('|').slice(1, -1);
    if (cells.length < 3) throw new Error(`docs/architecture.md: row "${row}" has fewer than three columns`);
    const folder = cells[0].trim().replace(/`/g, '');
    if (table.has(folder)) throw new Error(`docs/architecture.md: a second row for ${folder}`);
    const testsMayImport = parseEntries(cells[2]);
    if (testsMayImport === '*') throw new Error(`docs/architecture.md: ${folder}: tests take '*' from the second column only`);
    table.set(folder, { folder, mayImport: parseEntries(cells[1]), testsMayImport });
  }
  return table;
}

export interface ImportEdge {
  specifier: string;
  typesOnly: boolean;
  line: number;
}

// Import and re-export statements start a line; the specifier list is what may stand between
// `import` and `from` (a default name, `{ … }` over several lines, `* as x`), so prose or a string
// that merely contains "from '…'" is not mistaken for one.
const STATIC_IMPORT =
  /^[ \t]*(?:import|export)[ \t]+(type[ \t]+)?(?:[\w$]+[ \t]*,?[ \t]*)?(?:\{[^}]*\}|\*(?:[ \t]+as[ \t]+[\w$]+)?)?[ \t\n]*from[ \t]*['"]([^'"\n]+)['"]/gm;
const SIDE_EFFECT_IMPORT = /^[ \t]*import[ \t]*['"]([^'"\n]+)['"]/gm;
// import('…') as an expression; `typeof import('…')` in a type position is erased.
const DYNAMIC_IMPORT = /(typeof[ \t]+)?\bimport\([ \t]*['"]([^'"\n]+)['"][ \t]*\)/g;

/** Every module a source text imports, with whether the import is erased (`import type`). */
export function importsOf(source: string): ImportEdge[] {
  const lineAt = (index: number) => source.slice(0, index).split('\n').length;
  const edges: ImportEdge[] = [];
  for (const m of source.matchAll(STATIC_IMPORT)) edges.push({ specifier: m[2], typesOnly: m[1] !== undefined, line: lineAt(m.index) });
  for (const m of source.matchAll(SIDE_EFFECT_IMPORT)) edges.push({ specifier: m[1], typesOnly: false, line: lineAt(m.index) });
  for (const m of source.matchAll(DYNAMIC_IMPORT)) edges.push({ specifier: m[2], typesOnly: m[1] !== undefined, line: lineAt(m.index) });
  return edges.sort((a, b) => a.line - b.line);
}

/** The folder of src/ a path from the repository root lies in; '' for a file directly in src/. */
function folderOf(path: string): string {
  const parts = path.split('/');
  return parts.length > 2 ? parts[1] : '';
}

function describe(rule: Rule): string {
  const list = (entries: Allowed[]) => (entries.length === 0 ? 'nothing of Lacre\'s' : entries.map((e) => `${e.target}${e.typesOnly ? ' (types)' : ''}`).join(', '));
  const main = rule.mayImport === '*' ? 'everything' : list(rule.mayImport);
  return `${rule.folder} may import: ${main}${rule.testsMayImport.length > 0 ? `; its tests also: ${list(rule.testsMayImport)}` : ''}`;
}

function allows(entry: Allowed, target: string, typesOnly: boolean): boolean {
  if (entry.typesOnly && !typesOnly) return false;
  const inSrc = target.startsWith('src/');
  const path = inSrc ? target.slice(4) : target;
  return path === entry.target || path.startsWith(`${entry.target}/`) || path === `${entry.target}.ts`;
}

/**
 * The imports of one file that the table forbids, each as a message naming the file, the import
 * and the rule. `file` is the path from the repository root (`src/delivery/agent.ts`).
 */
export function checkImports(file: string, source: string, table: ImportTable): string[] {
  const folder = folderOf(file);
  const rule = table.get(folder === '' ? 'src' : folder);
  if (!rule) return [`${file}: src/${folder} has no row in the "Who may import whom" table of docs/architecture.md`];
  const isTest = file.endsWith('.test.ts');
  const problems: string[] = [];
  for (const edge of importsOf(source)) {
    if (!edge.specifier.startsWith('.')) continue; // node built-ins and npm packages
    const target = posix.normalize(posix.join(posix.dirname(file), edge.specifier));
    const targetFolder = target.startsWith('src/') ? folderOf(target) : undefined;
    if (targetFolder === folder && target.startsWith('src/')) continue; // within its own folder
    const entries = [...(rule.mayImport === '*' ? [] : rule.mayImport), ...(isTest ? rule.testsMayImport : [])];
    const ok = (rule.mayImport === '*' && target.startsWith('src/')) || entries.some((e) => allows(e, target, edge.typesOnly));
    if (!ok) {
      problems.push(`${file}:${edge.line} imports${edge.typesOnly ? ' type' : ''} '${edge.specifier}' (${target}), which the table forbids: ${describe(rule)}`);
    }
  }
  return problems;
}

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) sourceFiles(path, out);
    else if (entry.endsWith('.ts')) out.push(path);
  }
  return out;
}

const table = parseImportTable(readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8'));

test('every import under src/ is one the table in docs/architecture.md allows', () => {
  const files = sourceFiles(SRC);
  assert.ok(files.length > 100, `only ${files.length} files found under ${SRC}`);
  const problems = files.flatMap((path) => checkImports(relative(ROOT, path).split('\\').join('/'), readFileSync(path, 'utf8'), table));
  assert.deepEqual(problems, []);
});

test('every folder under src/ has a row, and every row is a folder', () => {
  const folders = readdirSync(SRC).filter((e) => statSync(join(SRC, e)).isDirectory()).sort();
  const rows = [...table.keys()].filter((f) => f !== 'src').sort();
  assert.deepEqual(rows, folders);
  for (const rule of table.values()) {
    for (const entry of [...(rule.mayImport === '*' ? [] : rule.mayImport), ...rule.testsMayImport]) {
      const base = entry.target.startsWith('test/') ? join(ROOT, entry.target) : join(SRC, entry.target);
      let exists = false;
      for (const candidate of [base, `${base}.ts`]) {
        try {
          statSync(candidate);
          exists = true;
        } catch {
          // try the next form
        }
      }
      assert.ok(exists, `${rule.folder}: "${entry.target}" names no folder or file`);
    }
  }
});

test('a backward import fails with the file, the import and the rule named', () => {
  const backward = "import { sendApi } from '../intake/mailjet-send.ts';\n";
  const problems = checkImports('src/delivery/agent.ts', `// the agent\n${backward}`, table);
  assert.equal(problems.length, 1);
  assert.match(problems[0], /^src\/delivery\/agent\.ts:2 imports '\.\.\/intake\/mailjet-send\.ts' \(src\/intake\/mailjet-send\.ts\), which the table forbids: delivery may import: .*dns.*tls-policy/);
  assert.doesNotMatch(problems[0].split('delivery may import:')[1].split(';')[0], /\bintake\b/);
  // The same import from the wiring is allowed, and so are packages and node built-ins.
  assert.deepEqual(checkImports('src/server/serve.ts', backward, table), []);
  assert.deepEqual(checkImports('src/delivery/agent.ts', "import net from 'node:net';\nimport pino from 'pino';\n", table), []);
});

test('the checker reads type-only, multi-line, re-exported and dynamic imports, and nothing in prose or strings', () => {
  // Spelt in pieces so that this file's own source holds no dynamic import for the real check to find.
  const dynamic = (prefix: string, path: string) => `${prefix}${'imp'}ort('${path}')`;
  const source = [
    '// Used to import x from \'../intake/a.ts\' — prose, not an import',
    "import type { Logger } from '../log/logger.ts';",
    'import {',
    '  a,',
    '  type B,',
    "} from '../queue/queue.ts';",
    "export { c } from '../store/store.ts';",
    "export type { D } from './local.ts';",
    "const s = \"import y from '../intake/b.ts'\";",
    `const m = await ${dynamic('', '../compose/bounces.ts')};`,
    `type T = ${dynamic('typeof ', '../events/derive.ts')};`,
    "import '../server/side-effect.ts';",
  ].join('\n');
  assert.deepEqual(importsOf(source), [
    { specifier: '../log/logger.ts', typesOnly: true, line: 2 },
    { specifier: '../queue/queue.ts', typesOnly: false, line: 3 },
    { specifier: '../store/store.ts', typesOnly: false, line: 7 },
    { specifier: './local.ts', typesOnly: true, line: 8 },
    { specifier: '../compose/bounces.ts', typesOnly: false, line: 10 },
    { specifier: '../events/derive.ts', typesOnly: true, line: 11 },
    { specifier: '../server/side-effect.ts', typesOnly: false, line: 12 },
  ]);
  // `log (types)` lets delivery name a type but not load the module.
  assert.deepEqual(checkImports('src/delivery/a.ts', "import type { Logger } from '../log/logger.ts';\n", table), []);
  assert.match(checkImports('src/delivery/a.ts', "import { Logger } from '../log/logger.ts';\n", table)[0], /imports '\.\.\/log\/logger\.ts'.*delivery may import: .*log \(types\)/);
  // A test may use the harness; the code it tests may not.
  assert.deepEqual(checkImports('src/queue/queue.test.ts', "import { x } from '../../test/harness/temp-data.ts';\n", table), []);
  assert.equal(checkImports('src/queue/queue.ts', "import { x } from '../../test/harness/temp-data.ts';\n", table).length, 1);
  // A folder without a row is reported, not passed.
  assert.match(checkImports('src/newstage/a.ts', '', table)[0], /src\/newstage has no row/);
});

test('no source file keeps a "May import" list of its own: the table is the one list', () => {
  const stale = sourceFiles(SRC)
    .filter((path) => /\bmay import\b/i.test(readFileSync(path, 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n')))
    .filter((path) => !path.endsWith('architecture.test.ts'))
    .map((path) => relative(ROOT, path));
  assert.deepEqual(stale, []);
});

