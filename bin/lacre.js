#!/usr/bin/env node
// The `lacre` command. npm puts the project's pinned Node 24 first on PATH for `npx lacre`,
// so `env node` finds it; the source is TypeScript run by Node's type stripping.
import '../src/cli/main.ts';
