// The data dir a command may use. Only `serve` (and commands that set Lacre up) create it; a
// read-only command run from the wrong directory must not quietly make a new, empty database and a
// new master key there, so it refuses and says which setting to fix.
import { mkdirSync, statSync, accessSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CliError } from './errors.ts';

/** create: make it when missing (serve, commands that write); existing: it must already hold a database (reads, and changes to what is there). */
export type DataDirUse = 'create' | 'existing';

/** Returns whether the directory was there or had to be made; throws CliError naming the fix. */
export function prepareDataDir(dataDir: string, use: DataDirUse): 'existing' | 'created' {
  const dir = resolve(dataDir);
  const db = join(dir, 'lacre.db');
  if (use !== 'create') {
    if (!isDirectory(dir) || !exists(db)) {
      throw new CliError(`no Lacre data dir at ${dir}; set LACRE_DATA_DIR to the one \`lacre serve\` uses (or run \`lacre serve\` once to create it)`);
    }
    return 'existing';
  }
  const created = !exists(dir);
  makeDirectories(dir);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new CliError(`the data dir ${dir} is not writable by this user; fix its owner or mode, or set LACRE_DATA_DIR`);
  }
  return created ? 'created' : 'existing';
}

/**
 * mkdir -p, one level at a time. Why not `mkdirSync(dir, { recursive: true })`: under /proc and
 * similar pseudo file systems Node's recursive mkdir can spin forever on an EEXIST/ENOENT loop (seen
 * with LACRE_DATA_DIR=/proc/x); going level by level turns every such case into a clear error.
 */
function makeDirectories(dir: string): void {
  const missing: string[] = [];
  let at = dir;
  while (!exists(at)) {
    missing.unshift(at);
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  if (exists(at) && !isDirectory(at)) {
    throw new CliError(`cannot create the data dir ${dir}: ${at} is a file, not a directory; set LACRE_DATA_DIR to a directory`);
  }
  for (const level of missing) {
    try {
      mkdirSync(level, { mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && isDirectory(level)) continue;
      const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'ENOENT' || code === 'EEXIST' ? 'the file system does not allow it' : (err as Error).message;
      throw new CliError(`cannot create the data dir ${dir} (${level}: ${why}); set LACRE_DATA_DIR to a directory this user may write`);
    }
  }
  if (!isDirectory(dir)) throw new CliError(`the data dir ${dir} is not a directory; set LACRE_DATA_DIR to a directory`);
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
